"""The Model Registry on the tiny model: ``tracking.register_as`` versions, ``pipeline.promote`` and the
champion loaded back by alias, against a real SQLite store.

One 2-job sweep (seeds 1 and 2, models logged and registered) is shared by the module's tests; the
refusals build their FAILED / unfinished runs with MLflow's client in a store of their own.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline import REPO_ROOT, PipelineError
from tests.conftest import in_process

NAME = "tiny-sts"


def promote(capsys, uri: str, *args: str) -> tuple[int, str, str]:
    """``python -m pipeline.promote`` against ``uri``, in this process: (exit status, stdout, stderr)."""
    return in_process("promote", capsys, "--tracking-uri", uri, *args)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished 2-job sweep whose jobs registered their models as versions of ``tiny-sts``."""
    import mlflow

    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder}/mlflow.db"
    command = [sys.executable, "-m", "pipeline", "-m", "debug=smoke", "seed=1,2", f"tracking.register_as={NAME}",
               f"tracking.uri={uri}", f"tracking.artifact_root={folder}/artifacts", f"hydra.sweep.dir={folder}/sweep"]  # fmt: skip
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("pipeline.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {"uri": uri, "client": client, "parent": parent, "children": children}


@pytest.mark.slow
def test_register_as_makes_one_tagged_version_per_job(sweep):
    client, children = sweep["client"], sweep["children"]
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert sorted(v.tags["run_id"] for v in versions) == sorted(c.info.run_id for c in children)
    for version in versions:
        run = next(c for c in children if c.info.run_id == version.tags["run_id"])
        assert float(version.tags["metric.sts-dev_spearman_cosine"]) == run.data.metrics["sts-dev_spearman_cosine"]
        assert version.tags["optimized_metric"] == "sts-dev_spearman_cosine"
    digests = {v.tags["config.digest"] for v in versions}
    assert len(digests) == 2  # the seeds differ, so the configs do


@pytest.mark.slow
def test_promote_parent_sets_the_champion_on_the_best_child_and_it_loads(sweep, capsys):
    import mlflow

    code, out, err = promote(capsys, sweep["uri"], "--parent", sweep["parent"].info.run_id, "--alias", "champion")
    assert code == 0, err[-3000:]
    best = max(sweep["children"], key=lambda c: c.data.metrics["sts-dev_spearman_cosine"])
    champion = sweep["client"].get_model_version_by_alias(NAME, "champion")
    assert champion.tags["run_id"] == best.info.run_id and f"{NAME}@champion" in out
    mlflow.set_tracking_uri(sweep["uri"])
    model = mlflow.sentence_transformers.load_model(f"models:/{NAME}@champion")
    logged = sweep["client"].search_logged_models(
        [best.info.experiment_id], filter_string=f"source_run_id = '{best.info.run_id}'"
    )[0]
    direct = mlflow.sentence_transformers.load_model(f"models:/{logged.model_id}")
    sentences = ["a cat sits on the mat", "stocks fell sharply"]
    assert np.allclose(model.encode(sentences), direct.encode(sentences))
    # one run promoted by id, under another name
    other = next(c for c in sweep["children"] if c is not best)
    code, out, err = promote(
        capsys, sweep["uri"], "--run", other.info.run_id, "--alias", "challenger", "--register-as", "tiny-b"
    )
    assert code == 0, err[-3000:]
    assert sweep["client"].get_model_version_by_alias("tiny-b", "challenger").tags["run_id"] == other.info.run_id


@pytest.mark.slow
def test_promote_refuses_what_it_cannot_promote(sweep, capsys):
    import mlflow

    uri, parent = sweep["uri"], sweep["parent"].info.run_id
    client = mlflow.MlflowClient(uri)
    experiment = sweep["parent"].info.experiment_id
    failed = client.create_run(experiment, tags={"mlflow.parentRunId": "none"}).info.run_id
    client.set_terminated(failed, "FAILED")
    running = client.create_run(experiment).info.run_id
    empty_parent = client.create_run(experiment, tags={"pipeline.role": "sweep",
                                                       "pipeline.optimized_metric": "sts-dev_spearman_cosine"}).info.run_id  # fmt: skip
    child = client.create_run(experiment, tags={"mlflow.parentRunId": empty_parent}).info.run_id
    client.set_terminated(child, "FAILED")
    cases = [
        (["--parent", parent, "--alias", "best one!"], "--alias 'best one!'"),
        (["--parent", parent, "--metric", "sts-dev_nothing"], "no FINISHED child logged 'sts-dev_nothing'"),
        (["--parent", empty_parent], "no FINISHED child"),
        (["--run", failed], "is FAILED, not FINISHED"),
        (["--run", running], "is RUNNING, not FINISHED"),
        (["--run", sweep["children"][0].info.run_id, "--metric", "sts-dev_nothing"], "has no finite 'sts-dev_nothing'"),
    ]
    for args, says in cases:
        code, _, err = promote(capsys, uri, *args)
        assert code == 2 and says in err, (args, err[-2000:])
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {a for v in client.search_model_versions(f"name = '{NAME}'") for a in v.aliases} <= {"champion"}


def test_register_as_needs_a_store_with_a_registry(tmp_path):
    from pipeline.job import preflight
    from tests.conftest import compose_config

    store = tmp_path / "filestore"
    cfg = compose_config(["debug=smoke", f"tracking.uri=file://{store}", "tracking.register_as=tiny"])
    with pytest.raises(PipelineError, match="has no usable Model Registry"):
        preflight(cfg, tmp_path / "job", None)
    assert not store.exists() or not any(store.rglob("meta.yaml"))  # no run was created there
    local = f"tracking.uri=sqlite:///{tmp_path}/local.db"  # never the repo's own mlruns/
    cfg = compose_config(["debug=smoke", local, "tracking.register_as=tiny", "tracking.log_model=false"])
    with pytest.raises(PipelineError, match="tracking.log_model=true"):
        preflight(cfg, tmp_path / "job", None)
    cfg = compose_config(["debug=smoke", f"tracking.uri=sqlite:///{tmp_path}/x.db", "tracking.register_as=a/b"])
    with pytest.raises(PipelineError, match="tracking.register_as='a/b'"):
        preflight(cfg, tmp_path / "job", None)

"""The baseline cache: the starting model is scored once per key, and every later job with that key
copies the scores from the store (tags ``baseline.cache`` / ``baseline.source``)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import mlflow
import pytest

from pipeline import REPO_ROOT
from tests.conftest import all_runs, check_items_reproduce, compose_config

TINY = ("model=tiny", "training.max_steps=2", "training.per_device_train_batch_size=4", "data.max_train_rows=16",
        "tracking.log_model=false")  # fmt: skip
SMOKE = ("debug=smoke", "tracking.log_model=false")


def baseline_of(run) -> dict[str, float]:
    return {name: value for name, value in run.data.metrics.items() if name.startswith("baseline/")}


def items_bytes(client, run) -> dict[str, bytes]:
    """The run's ``items/baseline/*`` files: name -> content."""
    if not client.list_artifacts(run.info.run_id, "items/baseline"):
        return {}
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="items/baseline", tracking_uri=client.tracking_uri
    )
    return {path.name: path.read_bytes() for path in sorted(Path(local).glob("*.parquet"))}


def cache_tags(run) -> tuple[str, str]:
    return run.data.tags["baseline.cache"], run.data.tags["baseline.source"]


@pytest.fixture
def data_dir(tmp_path):
    """The bundled example data, copied so that a test can change a row."""
    folder = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "pipeline" / "data" / "example", folder)
    return folder


def run_in_store(tmp_path, name: str, *overrides: str):
    """One job in-process against another SQLite store (``tmp_path/name``): nothing there to reuse."""
    from pipeline.job import JobRequest, run_job

    store = tmp_path / name
    cfg = compose_config([*overrides, f"tracking.uri=sqlite:///{store}/mlflow.db", f"tracking.artifact_root={store}"])
    return run_job(cfg, tmp_path / f"{name}-job", JobRequest(list(overrides))), f"sqlite:///{store}/mlflow.db"


@pytest.mark.slow
def test_the_same_key_reuses_the_baseline_and_a_changed_key_recomputes_it(run_job, mlflow_client, data_dir, tmp_path):
    job = (*TINY, f"data.local_dir={data_dir}")
    first = mlflow_client.get_run(run_job(*job).run_id)
    assert first.info.status == "FINISHED" and cache_tags(first) == ("miss", first.info.run_id)
    computed = baseline_of(first)
    assert {"baseline/sts-dev_spearman_cosine", "baseline/sts-test_spearman_cosine"} <= set(computed)
    assert all(math.isfinite(value) for value in computed.values())

    # training settings are not part of the key: reused, the same numbers, and the job trains as usual
    result = run_job(*job, "training.learning_rate=1e-3")
    second = mlflow_client.get_run(result.run_id)
    assert second.info.status == "FINISHED" and cache_tags(second) == ("hit", first.info.run_id)
    assert second.data.tags["baseline.key"] == first.data.tags["baseline.key"]
    assert baseline_of(second) == computed
    assert {name: value for name, value in result.metrics.items() if name.startswith("baseline/")} == computed
    assert "sts-test_spearman_cosine" in second.data.metrics

    # what a reused baseline holds is what computing it gives: the same job against an empty store
    fresh, fresh_uri = run_in_store(tmp_path, "other-store", *job)
    recomputed = mlflow.MlflowClient(fresh_uri).get_run(fresh.run_id)
    assert cache_tags(recomputed) == ("miss", fresh.run_id) and baseline_of(recomputed) == computed
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)

    # anything that changes the numbers changes the key: an evaluator setting, the precision, the truncation
    # (padded: no packing probe has encoded text, so only the loaded model says it truncates to 4), the rows
    other_precision = "fp32" if first.data.tags["precision.effective"] == "bf16" else "bf16"
    padded = mlflow_client.get_run(run_job(*job, "hardware.packing=false").run_id)
    changed = {
        "evaluator": run_job(*job, "+evaluators.sts.evaluator.truncate_dim=16"),
        "precision": run_job(*job, f"hardware.precision={other_precision}"),
        "max_seq_length": run_job(*job, "hardware.packing=false", "model.max_seq_length=4"),
    }
    short = mlflow_client.get_run(changed["max_seq_length"].run_id)
    assert (
        baseline_of(short) != baseline_of(padded)
        and short.data.tags["baseline.key"] != padded.data.tags["baseline.key"]
    )
    test_csv = data_dir / "test.csv"
    test_csv.write_text(test_csv.read_text().replace("She locked the door behind her.", "She left the door open."))
    changed["data"] = run_job(*job)
    for what, outcome in changed.items():
        run = mlflow_client.get_run(outcome.run_id)
        assert cache_tags(run) == ("miss", outcome.run_id), what
        assert run.data.tags["baseline.key"] != first.data.tags["baseline.key"], what
    # each computed its own numbers: the changed test rows score differently, the unchanged dev rows alike
    data_run = mlflow_client.get_run(changed["data"].run_id)
    assert baseline_of(data_run)["baseline/sts-test_spearman_cosine"] != computed["baseline/sts-test_spearman_cosine"]
    assert baseline_of(data_run)["baseline/sts-dev_spearman_cosine"] == computed["baseline/sts-dev_spearman_cosine"]


@pytest.mark.slow
def test_a_failed_run_or_one_missing_metrics_is_never_a_source_and_a_rerun_recomputes(
    run_job, cli, store, mlflow_client
):
    first = mlflow_client.get_run(run_job(*SMOKE).run_id)
    assert cache_tags(first) == ("miss", first.info.run_id)
    key, metrics = first.data.tags["baseline.key"], baseline_of(first)
    mlflow_client.set_terminated(first.info.run_id, "FAILED")
    # a finished run tagged with the key whose baseline metrics were never logged
    hollow = mlflow_client.create_run(first.info.experiment_id, tags={"baseline.key": key, "baseline.cache": "miss"})
    mlflow_client.log_dict(hollow.info.run_id, {name: 0.5 for name in metrics}, "baseline/metrics.json")
    mlflow_client.set_terminated(hollow.info.run_id, "FINISHED")

    second = mlflow_client.get_run(run_job(*SMOKE).run_id)
    assert cache_tags(second) == ("miss", second.info.run_id) and baseline_of(second) == metrics
    third = mlflow_client.get_run(run_job(*SMOKE).run_id)
    assert cache_tags(third) == ("hit", second.info.run_id) and baseline_of(third) == metrics
    # a hit holds its source's per-item baseline files, byte for byte, as a miss would
    assert items_bytes(mlflow_client, third) == items_bytes(mlflow_client, second) != {}
    assert check_items_reproduce(mlflow_client, third, "items/baseline", prefix="baseline/")
    # a replay scores the starting model itself, so comparing baselines checks something
    replayed = cli(third.info.run_id, "--tracking-uri", store["uri"], module="pipeline.rerun")
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    (replay,) = [r for r in all_runs(mlflow_client) if r.data.tags.get("pipeline.rerun_of") == third.info.run_id]
    assert cache_tags(replay) == ("miss", replay.info.run_id) and baseline_of(replay) == metrics
    assert replay.data.tags["baseline.key"] == key  # the same key in another process

    off = mlflow_client.get_run(run_job(*SMOKE, "baseline=false").run_id)
    assert off.info.status == "FINISHED" and "sts-test_spearman_cosine" in off.data.metrics
    assert baseline_of(off) == {} and not [tag for tag in off.data.tags if tag.startswith("baseline.")]


@pytest.mark.slow
def test_a_sequential_sweep_computes_the_baseline_once(cli, mlflow_client, tmp_path):
    out = cli("-m", *SMOKE, "training.learning_rate=1e-5,1e-3", f"hydra.sweep.dir={tmp_path}/sweep", in_process=True)
    assert out.returncode == 0, out.stderr[-3000:]
    children = sorted(
        (run for run in all_runs(mlflow_client) if run.data.tags.get("pipeline.role") != "sweep"),
        key=lambda run: run.info.start_time,
    )
    assert [run.info.status for run in children] == ["FINISHED", "FINISHED"]
    assert [cache_tags(run) for run in children] == [
        ("miss", children[0].info.run_id),
        ("hit", children[0].info.run_id),
    ]
    assert baseline_of(children[1]) == baseline_of(children[0]) != {}
    assert [run.data.params["training.learning_rate"] for run in children] == ["1e-05", "0.001"]

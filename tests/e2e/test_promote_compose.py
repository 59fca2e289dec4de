"""The mined retrieval recipe as a sweep (2 learning rates x 2 seeds, tiny model, a cold mine cache),
ranked and promoted by its "@" metric. The jobs run one after another in one process (Hydra's basic
launcher): parallel sweeps and concurrent mining have tests of their own (test_sweep, test_mine_cache).

Sentence-transformers names the metric ``ir-dev_cosine_ndcg@10``, MLflow stores it as
``ir-dev_cosine_ndcg_at_10``: the leaderboard, ``compare --group-by seed``, ``promote --parent`` and the
registry all take the first and find the second. The jobs register their models (``tracking.register_as``),
so promoting reuses a version instead of adding one.
"""

from __future__ import annotations

import io
import statistics

import numpy as np
import pytest

from tests.conftest import in_process, pipeline_in_process

NAME = "tiny-ir"
METRIC, STORED = "ir-dev_cosine_ndcg@10", "ir-dev_cosine_ndcg_at_10"


def mined_sweep(folder, capfd) -> dict:
    """The sweep, run in this process: its store, client, parent and four children."""
    import mlflow

    uri = f"sqlite:///{folder}/mlflow.db"
    args = ["-m", "experiment=trecqa_mined", "debug=smoke", "seed=1,2", "training.learning_rate=1e-5,5e-2",
            f"tracking.register_as={NAME}", f"tracking.uri={uri}", f"tracking.artifact_root={folder}/artifacts",
            f"mine.cache_dir={folder}/mined", f"hydra.sweep.dir={folder}/sweep", f"hydra.run.dir={folder}/hydra"]  # fmt: skip
    out = pipeline_in_process(args, capfd)
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("pipeline.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    # the tiny miner is the model being trained, built from its config and seed: one mined set per seed,
    # mined once (a miss) and found by the other learning rate's job (a hit), in whichever order they ran
    for seed in ("1", "2"):
        tags = [c.data.tags for c in children if c.data.params["seed"] == seed]
        assert sorted(t["mine.cache"] for t in tags) == ["hit", "miss"], (seed, tags)
        assert len({t["mine.folder"] for t in tags}) == 1
    return {"uri": uri, "client": client, "parent": parent, "children": children, "folder": folder}


def seed_means(children) -> dict[str, float]:
    """learning rate -> the mean of the metric over its seeds."""
    by_rate: dict[str, list[float]] = {}
    for child in children:
        by_rate.setdefault(child.data.params["training.learning_rate"], []).append(child.data.metrics[STORED])
    return {rate: statistics.fmean(values) for rate, values in by_rate.items()}


@pytest.mark.slow
def test_a_mined_sweep_is_ranked_promoted_and_refused_by_its_at_metric(tmp_path, capfd):
    """One sweep (about 20 s) for the three parts, so that it runs once whichever worker takes the test."""
    sweep = mined_sweep(tmp_path, capfd)
    check_leaderboard_and_compare(sweep, capfd)
    check_promote(sweep, capfd)
    check_refusals(sweep, capfd)


def check_leaderboard_and_compare(sweep, capsys):
    """The seed-folded leaderboard and ``compare`` rank by the "@" metric, under either spelling."""
    import pandas as pd

    means = seed_means(sweep["children"])
    path = sweep["client"].download_artifacts(sweep["parent"].info.run_id, "leaderboard.csv", str(sweep["folder"]))
    board = pd.read_csv(path)
    assert list(board["n"]) == [2, 2]
    assert list(board[STORED]) == sorted(board[STORED], reverse=True)
    assert np.allclose(board[STORED], sorted(means.values(), reverse=True))
    for metric in ([], ["--metric", METRIC], ["--metric", STORED]):  # the default, and either spelling typed
        args = ["--tracking-uri", sweep["uri"], "--parent", sweep["parent"].info.run_id, "--format", "csv"]
        code, out, err = in_process("compare", capsys, *args, "--group-by", "seed", *metric)
        assert code == 0, err[-2000:]
        folded = pd.read_csv(io.StringIO(out))
        assert np.allclose(folded[STORED], sorted(means.values(), reverse=True)), (metric, out)
    code, out, err = in_process("compare", capsys, *args)  # one row per job, best first
    jobs = pd.read_csv(io.StringIO(out))
    assert list(jobs[STORED]) == sorted((c.data.metrics[STORED] for c in sweep["children"]), reverse=True)


def check_promote(sweep, capsys):
    """``promote --parent`` picks the best seed mean, reuses the registered version, and it loads."""
    import mlflow

    client, children = sweep["client"], sweep["children"]
    versions_before = {v.version: v.run_id for v in client.search_model_versions(f"name = '{NAME}'")}
    assert sorted(versions_before.values()) == sorted(c.info.run_id for c in children)
    for version in client.search_model_versions(f"name = '{NAME}'"):  # registered with MLflow's spelling
        run = next(c for c in children if c.info.run_id == version.run_id)
        assert float(version.tags[f"metric.{STORED}"]) == run.data.metrics[STORED]
        assert version.tags["optimized_metric"] == METRIC
    assert len({v.tags["config.digest"] for v in client.search_model_versions(f"name = '{NAME}'")}) == 4  # 4 configs
    code, out, err = in_process(
        "promote", capsys, "--tracking-uri", sweep["uri"], "--parent", sweep["parent"].info.run_id
    )
    assert code == 0, err[-3000:]
    means = seed_means(children)
    best_rate = max(means, key=means.get)
    group = [c for c in children if c.data.params["training.learning_rate"] == best_rate]
    best = max(group, key=lambda c: c.data.metrics[STORED])
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.run_id == best.info.run_id
    assert "mean over seeds" in out and f"training.learning_rate={best_rate}" in out, out
    assert f"seed={best.data.params['seed']}" in out and f"{METRIC}=" in out, out
    # the run's own version moved under the alias; no duplicate
    assert {v.version: v.run_id for v in client.search_model_versions(f"name = '{NAME}'")} == versions_before
    assert "existing version" in out and versions_before[champion.version] == best.info.run_id
    mlflow.set_tracking_uri(sweep["uri"])
    model = mlflow.sentence_transformers.load_model(f"models:/{NAME}@champion")
    logged = client.search_logged_models(
        [best.info.experiment_id], filter_string=f"source_run_id = '{best.info.run_id}'"
    )
    direct = mlflow.sentence_transformers.load_model(f"models:/{logged[0].model_id}")
    sentences = ["what is the capital of france", "paris is the capital of france"]
    embeddings = model.encode(sentences)
    assert embeddings.shape[0] == 2 and np.isfinite(embeddings).all()
    assert np.allclose(embeddings, direct.encode(sentences))
    # the same run promoted again under another alias: still no new version
    code, out, err = in_process("promote", capsys, "--tracking-uri", sweep["uri"], "--run", best.info.run_id,
                             "--alias", "stable", "--metric", STORED)  # fmt: skip
    assert code == 0 and f"{METRIC}=" in out, err[-2000:]
    assert client.get_model_version_by_alias(NAME, "stable").version == champion.version
    assert len(client.search_model_versions(f"name = '{NAME}'")) == len(versions_before)
    # another run promoted by id under another name: a version of that name, with the alias
    other = next(c for c in children if c is not best)
    code, out, err = in_process("promote", capsys, "--tracking-uri", sweep["uri"], "--run", other.info.run_id,
                                "--alias", "challenger", "--register-as", "tiny-b")  # fmt: skip
    assert code == 0, err[-3000:]
    assert client.get_model_version_by_alias("tiny-b", "challenger").run_id == other.info.run_id


def check_refusals(sweep, capsys):
    """Each refusal is one line and exit 2; the FAILED and unfinished runs are made with MLflow's client."""
    client, uri, parent = sweep["client"], sweep["uri"], sweep["parent"].info.run_id
    experiment = sweep["parent"].info.experiment_id
    failed = client.create_run(experiment, tags={"mlflow.parentRunId": "none"}).info.run_id
    client.set_terminated(failed, "FAILED")
    running = client.create_run(experiment).info.run_id
    empty_parent = client.create_run(experiment, tags={"pipeline.role": "sweep",
                                                       "pipeline.optimized_metric": METRIC}).info.run_id  # fmt: skip
    child = client.create_run(experiment, tags={"mlflow.parentRunId": empty_parent}).info.run_id
    client.set_terminated(child, "FAILED")
    cases = [
        (["--parent", parent, "--alias", "best one!"], "--alias 'best one!'"),
        (["--parent", parent, "--metric", "ir-dev_nothing"], "no FINISHED child logged 'ir-dev_nothing'"),
        (["--parent", empty_parent], "no FINISHED child"),
        (["--run", failed], "is FAILED, not FINISHED"),
        (["--run", running], "is RUNNING, not FINISHED"),
        (["--run", sweep["children"][0].info.run_id, "--metric", "ir-dev_nothing"], "has no finite 'ir-dev_nothing'"),
    ]
    for args, says in cases:
        code, _, err = in_process("promote", capsys, "--tracking-uri", uri, *args)
        assert code == 2 and says in err, (args, err[-2000:])
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "best one!" not in {a for v in client.search_model_versions(f"name = '{NAME}'") for a in v.aliases}


def test_promote_parent_picks_the_best_seed_mean_not_the_lucky_seed(mlflow_client, store, capsys):
    """Runs written with MLflow's client into a real store: config A has the single best seed (0.9), config
    B the best mean (0.6 and 0.6 against 0.9 and 0.1)."""
    import pandas as pd

    from pipeline.tracking.registry import best_child

    experiment = mlflow_client.create_experiment("seeds")
    parent = mlflow_client.create_run(experiment, tags={"pipeline.role": "sweep", "pipeline.optimized_metric": METRIC})
    parent_id = parent.info.run_id
    for key in ("sweep.seed", "sweep.training.learning_rate"):
        mlflow_client.log_param(parent_id, key, "swept")
    ids = {}
    for rate, seed, value in [("A", 1, 0.9), ("A", 2, 0.1), ("B", 1, 0.6), ("B", 2, 0.6)]:
        run = mlflow_client.create_run(experiment, tags={"mlflow.parentRunId": parent_id})
        params = {"seed": seed, "training.seed": seed, "training.learning_rate": rate, "optimized_metric": METRIC}
        for key, param in params.items():
            mlflow_client.log_param(run.info.run_id, key, param)
        mlflow_client.log_metric(run.info.run_id, STORED, value)
        mlflow_client.set_terminated(run.info.run_id)
        ids[rate, seed] = run.info.run_id
    choice = best_child(mlflow_client, parent_id, None)
    assert choice.run.info.run_id in (ids["B", 1], ids["B", 2]) and choice.metric == METRIC
    assert "training.learning_rate=B" in choice.reason and "0.6000 over 2 seeds" in choice.reason
    # the seed-folded table ranks the same way: B first, although A holds the single best job
    args = ["--tracking-uri", store["uri"], "--parent", parent_id, "--format", "csv", "--group-by", "seed"]
    code, out, err = in_process("compare", capsys, *args)
    assert code == 0, err[-2000:]
    assert list(pd.read_csv(io.StringIO(out))["training.learning_rate"]) == ["B", "A"], out
    mlflow_client.set_tag(parent_id, "pipeline.direction", "minimize")  # lower is better: A's mean (0.5) wins
    choice = best_child(mlflow_client, parent_id, STORED)
    assert choice.run.info.run_id == ids["A", 2]
    # a sweep that swept no seed: the single best child
    unseeded = mlflow_client.create_run(experiment, tags={"pipeline.optimized_metric": METRIC}).info.run_id
    for rate, seed in ids:
        mlflow_client.set_tag(ids[rate, seed], "mlflow.parentRunId", unseeded)
    assert best_child(mlflow_client, unseeded, None).run.info.run_id == ids["A", 1]

"""Comparisons with intervals on a real SQLite store holding crafted runs: ``compare --runs``, the grouping
rule behind ``promote --parent`` and ``compare --group-by seed``, and ``promote``'s champion check.

The runs are made with MLflow's own client: params, metrics, a LoggedModel and the per-item score files
``items/<evaluator>-<split>.parquet`` in the format the evaluate stage writes (Parquet schema metadata
``pipeline.metrics``), so each command reads exactly what it reads after a real job, without training.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scipy import stats

from tests.conftest import in_process

METRIC = "sts-test_spearman_cosine"
DEV = "sts-dev_spearman_cosine"
SIZE = 1379  # STSb's test split


def write_items(path, score, label, prefix: str = "sts-test") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    described = {
        f"{prefix}_spearman_cosine": {"statistic": "spearman", "columns": ["score", "label"]},
        f"{prefix}_pearson_cosine": {"statistic": "pearson", "columns": ["score", "label"]},
    }
    table = pa.table({"score": score, "label": label})
    pq.write_table(table.replace_schema_metadata({"pipeline.metrics": json.dumps(described)}), path)


def crafted_run(client, experiment_id, tmp_path, params, metrics=None, scores=None, label=None, parent=None) -> str:
    """A FINISHED run with ``params``, ``metrics`` (plus the items' own metrics) and a logged model."""
    import mlflow

    tags = {"mlflow.parentRunId": parent, "pipeline.role": "job"} if parent else {}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    metrics = dict(metrics or {})
    if scores is not None:
        folder = tmp_path / run_id / "items"
        folder.mkdir(parents=True)
        write_items(folder / "sts-test.parquet", scores, label)
        client.log_artifacts(run_id, str(folder), "items")
        metrics[METRIC] = stats.spearmanr(scores, label)[0]
        metrics["sts-test_pearson_cosine"] = stats.pearsonr(scores, label)[0]
    client.log_batch(
        run_id,
        metrics=[mlflow.entities.Metric(k, float(v), 0, 0) for k, v in metrics.items()],
        params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()],
    )
    model = client.create_logged_model(experiment_id, source_run_id=run_id, name="model")
    client.finalize_logged_model(model.model_id, "READY")
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture
def crafted(store, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(store["uri"])
    experiment_id = client.create_experiment("crafted", artifact_location=str(tmp_path / "artifacts"))
    rng = np.random.default_rng(0)
    label = np.round(rng.uniform(0, 5, SIZE), 1)

    def run(noise: float | None = None, scores=None, labels=None, **params) -> str:
        if scores is None and noise is not None:
            scores = label + rng.normal(0, noise, SIZE)
        params = {"optimized_metric": METRIC, **params}
        labels = label if labels is None else labels
        return crafted_run(client, experiment_id, tmp_path, params, scores=scores, label=labels)

    return {"uri": store["uri"], "client": client, "experiment_id": experiment_id, "label": label, "run": run}


def compare(capsys, uri, *args):
    return in_process("compare", capsys, "--tracking-uri", uri, *args)


def rows(out: str) -> dict[str, dict[str, float]]:
    return {r["metric"]: {k: float(v) for k, v in r.items() if k != "metric"} for r in csv.DictReader(io.StringIO(out))}


def test_compare_runs_a_run_with_its_rerun_and_two_differing_runs(crafted, capsys):
    uri, label = crafted["uri"], crafted["label"]
    scores = label + np.random.default_rng(1).normal(0, 1.5, SIZE)
    first, rerun, other = crafted["run"](scores=scores), crafted["run"](scores=scores.copy()), crafted["run"](1.3)
    code, out, err = compare(capsys, uri, "--runs", first, rerun, "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == "metric,a,b,delta,ci_low,ci_high,p_value,p_holm"
    found = rows(out)
    assert set(found) == {METRIC, "sts-test_pearson_cosine"}
    for values in found.values():
        assert (values["delta"], values["ci_low"], values["ci_high"], values["p_value"]) == (0, 0, 0, 1)
    assert "Holm" in err and "paired bootstrap" in err

    code, out, err = compare(capsys, uri, "--runs", first, other, "--format", "csv")
    assert code == 0, err
    got = rows(out)[METRIC]
    # the logged metric is the items' Spearman, and the interval an independent paired bootstrap's
    client = crafted["client"]
    assert got["a"] == pytest.approx(client.get_run(first).data.metrics[METRIC], abs=1e-6)
    a, b = client.get_run(first), client.get_run(other)
    other_scores = _items(client, other)
    reference = stats.bootstrap(
        (scores, other_scores, label),
        lambda x, y, z, axis: _spearman(y, z, axis) - _spearman(x, z, axis),
        paired=True,
        vectorized=True,
        n_resamples=3000,
        batch=500,
        method="percentile",
        random_state=np.random.default_rng(42),
    ).confidence_interval
    assert got["ci_low"] == pytest.approx(reference.low, abs=0.002)
    assert got["ci_high"] == pytest.approx(reference.high, abs=0.002)
    assert got["delta"] == pytest.approx(b.data.metrics[METRIC] - a.data.metrics[METRIC], abs=1e-9)

    code, out, _ = compare(capsys, uri, "--runs", first, other)  # the table states how it was computed
    assert code == 0 and "95% paired-bootstrap percentile interval" in out and "Holm" in out


def test_compare_runs_refuses_items_that_do_not_align(crafted, capsys):
    uri, label = crafted["uri"], crafted["label"]
    first = crafted["run"](1.0)
    shorter = crafted["run"](scores=label[:-1] + 0.1, labels=label[:-1])
    code, _, err = compare(capsys, uri, "--runs", first, shorter)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "1379 items" in err and "1378" in err, err
    shuffled = crafted["run"](scores=label + 0.1, labels=label[::-1].copy())
    code, _, err = compare(capsys, uri, "--runs", first, shuffled)
    assert code == 2 and "scored different items" in err and len(err.strip().splitlines()) == 1, err
    no_items = crafted["run"]()
    code, _, err = compare(capsys, uri, "--runs", first, no_items)
    assert code == 2 and "share no metric" in err and len(err.strip().splitlines()) == 1, err


def _items(client, run_id) -> np.ndarray:
    import pandas as pd

    return pd.read_parquet(client.download_artifacts(run_id, "items/sts-test.parquet"))["score"].to_numpy()


def _spearman(x, y, axis):
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx, ry = rx - rx.mean(axis=axis, keepdims=True), ry - ry.mean(axis=axis, keepdims=True)
    return (rx * ry).sum(axis=axis) / np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))


def promote(capsys, uri, *args):
    return in_process("promote", capsys, "--tracking-uri", uri, *args)


def test_promote_and_group_by_take_the_configuration_with_the_best_seed_mean(crafted, capsys, tmp_path):
    """``-m loss=mnrl,gist seed=1,2,3``: a config group is no swept param, yet its runs are another
    configuration. A scores 0.80/0.81/0.82, B 0.95/0.40/0.41: A has the best mean, so A's 0.82 run wins."""
    client, uri, experiment_id = crafted["client"], crafted["uri"], crafted["experiment_id"]
    tags = {"pipeline.role": "sweep", "pipeline.optimized_metric": DEV, "pipeline.direction": "maximize"}
    parent = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_param(parent, "sweep.loss", "mnrl,gist")
    client.log_param(parent, "sweep.seed", "1,2,3")
    losses = {"mnrl": "MultipleNegativesRankingLoss", "gist": "GISTEmbedLoss"}
    scores = {"mnrl": (0.80, 0.81, 0.82), "gist": (0.95, 0.40, 0.41)}
    runs = {}
    for loss, values in scores.items():
        for seed, value in enumerate(values, 1):
            params = {"loss._target_": f"sentence_transformers.losses.{losses[loss]}", "seed": seed}
            params |= {"training.seed": seed, "optimized_metric": DEV, "model.name": "tiny"}
            runs[loss, value] = crafted_run(client, experiment_id, tmp_path, params, {DEV: value}, parent=parent)
    client.set_terminated(parent, "FINISHED")

    code, out, err = promote(capsys, uri, "--parent", parent, "--register-as", "sweep-model")
    assert code == 0, err
    assert f"picked run {runs['mnrl', 0.82]}" in out and "over 3 seeds" in out, out
    assert "loss._target_=sentence_transformers.losses.MultipleNegativesRankingLoss" in out, out
    code, out, err = compare(capsys, uri, "--parent", parent, "--group-by", "seed", "--format", "csv")
    assert code == 0, err
    board = list(csv.DictReader(io.StringIO(out)))
    assert [(r["rank"], r["n"]) for r in board] == [("1", "3"), ("2", "3")]
    assert "MultipleNegativesRankingLoss" in board[0]["run"] and float(board[0][DEV]) == pytest.approx(0.81)


def test_a_champion_must_win(crafted, capsys):
    """The first promotion needs no comparison; a tie with the holder is refused (one line naming both
    runs and the interval, the alias left where it was); a clear win moves the alias; --force overrides."""
    client, uri, label = crafted["client"], crafted["uri"], crafted["label"]
    holder = crafted["run"](1.0)
    tie = crafted["run"](scores=label + np.random.default_rng(5).normal(0, 1.0, SIZE))
    winner = crafted["run"](0.3)

    def promoted(run_id, *more):
        code, out, err = promote(capsys, uri, "--run", run_id, "--register-as", "sts-model", *more)
        return code, out, err

    def champion() -> str:
        return client.get_model_version_by_alias("sts-model", "champion").run_id

    code, out, err = promoted(holder)
    assert code == 0 and "beats" not in out and champion() == holder, err
    code, _, err = promoted(tie)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and holder in err and tie in err and "includes 0" in err, err
    assert champion() == holder
    code, out, err = promoted(winner)
    assert code == 0 and "beats the alias's holder" in out and champion() == winner, err
    low = float(out.split("[")[1].split(",")[0])
    assert low > 0
    code, _, err = promoted(holder)  # the old holder is now clearly worse: refused, the interval favours the holder
    assert code == 2 and "favours the holder" in err, err
    code, out, err = promoted(tie, "--force")
    assert code == 0 and champion() == tie, err


class CountingClient:
    """The store's own ``MlflowClient``, counting the artifact downloads of each run (what a leaderboard reads)."""

    def __init__(self, client) -> None:
        self.client, self.downloads = client, {}

    def download_artifacts(self, run_id, path, *args, **kwargs):
        self.downloads[run_id, path] = self.downloads.get((run_id, path), 0) + 1
        return self.client.download_artifacts(run_id, path, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_leaderboard_reads_each_run_once_and_gives_the_intervals_of_each_comparison_alone(crafted, tmp_path):
    """A sweep's leaderboard (a learning rate run with two seeds, another with one): each run's items,
    final and baseline, are downloaded once, and every interval equals the one computed alone: the
    configurations against the best (two-level bootstrap) and each against its starting model (the
    two-level bootstrap for two seeds, the paired one for one)."""
    from pipeline.tracking import intervals, items, leaderboard

    client, label, rng = crafted["client"], crafted["label"], np.random.default_rng(7)
    base = label + rng.normal(0, 1.6, SIZE)  # the starting model's scores: copied into every run, as a hit does
    runs = {}
    for rate, seeds, noise in (("1e-05", (1, 2), 1.2), ("3e-05", (1,), 0.9)):
        for seed in seeds:
            run_id = crafted["run"](noise, **{"training.learning_rate": rate, "seed": seed})
            folder = tmp_path / run_id / "baseline"
            folder.mkdir(parents=True)
            write_items(folder / "sts-test.parquet", base, label)
            client.log_artifacts(run_id, str(folder), "items/baseline")
            client.log_metric(run_id, f"baseline/{METRIC}", stats.spearmanr(base, label)[0])
            runs.setdefault(rate, []).append(run_id)

    counting = CountingClient(client)
    table = leaderboard.table(leaderboard.search(crafted["uri"], [crafted["experiment_id"]]), METRIC)
    board = leaderboard.grouped(table, "seed", METRIC)
    board = leaderboard.with_intervals(board, counting, METRIC, 400, 0)
    assert counting.downloads and set(counting.downloads.values()) == {1}, counting.downloads
    assert {run_id for run_id, _ in counting.downloads} == {r for ids in runs.values() for r in ids}

    runs = dict(zip(board["training.learning_rate"], board["run_ids"].str.split()))  # the board's order draws the seeds
    final = {rate: [items.of_run(client, r)[METRIC].items for r in ids] for rate, ids in runs.items()}
    start = {rate: [items.of_run(client, r, baseline=True)[METRIC].items for r in ids] for rate, ids in runs.items()}
    alone = intervals.versus_best(final, "3e-05", 400, 0)
    for _, row in board.iterrows():
        rate = row["training.learning_rate"]
        want = alone[rate]
        assert (row[f"{METRIC} vs best"], row["ci_low"], row["ci_high"], row["p_value"]) == (
            want.delta, want.low, want.high, want.p_value
        )  # fmt: skip
        if len(runs[rate]) == 1:
            change = intervals.paired(start[rate][0], final[rate][0], 400, 0)
        else:
            change = intervals.versus_best({"baseline": start[rate], "trained": final[rate]}, "baseline", 400, 0)
            change = change["trained"]
        assert (row["delta_ci_low"], row["delta_ci_high"]) == (change.low, change.high)
    assert board.loc[0, "tied"] == "best" and board.loc[0, "training.learning_rate"] == "3e-05"

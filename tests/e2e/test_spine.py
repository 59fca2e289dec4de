"""End to end on the tiny model and a temporary SQLite store: what a run holds in MLflow."""

from __future__ import annotations

import csv
import gc
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import all_runs, check_items_reproduce, in_process, logged_items, logged_models

SMOKE = ("debug=smoke",)


def test_smoke_run_finishes_with_params_metrics_artifacts_and_tags(run_job, mlflow_client):
    result = run_job(*SMOKE)
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    # params: the composed config, dot keys, once each
    params = run.data.params
    assert params["training.learning_rate"] == "2e-05"
    assert params["loss._target_"].endswith("MultipleNegativesRankingLoss")
    assert params["model.architecture.hidden_size"] == "32"
    assert not any(key.startswith("hydra") for key in params)
    # metrics: per-step training metrics and final evaluator metrics, all finite
    history = mlflow_client.get_metric_history(result.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    for name in ("learning_rate", "grad_norm", "sts-test_spearman_cosine", "sts-dev_spearman_cosine"):
        assert name in run.data.metrics, name
    assert all(math.isfinite(v) for v in run.data.metrics.values())
    assert result.optimized_metric == run.data.metrics["sts-dev_spearman_cosine"]
    # tags: reproducibility
    tags = run.data.tags
    for key in (
        "git.commit",
        "git.dirty",
        "version.torch",
        "version.sentence-transformers",
        "data.fingerprint",
        "world_size",
    ):
        assert tags.get(key), key
    # artifacts
    names = {a.path for a in mlflow_client.list_artifacts(result.run_id)}
    assert {"config.yaml", "overrides.yaml", "model_card.md", "eval"} <= names
    eval_files = {a.path for a in mlflow_client.list_artifacts(result.run_id, "eval")}
    assert any(p.endswith("sts-test_results.csv") for p in eval_files)
    card = mlflow_client.download_artifacts(result.run_id, "model_card.md")
    assert "MultipleNegativesRankingLoss" in Path(card).read_text()
    # dataset lineage
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "evaluation"}


def test_logged_model_loads_back_through_mlflow_and_encodes(run_job):
    import mlflow

    result = run_job(*SMOKE)
    model = mlflow.sentence_transformers.load_model(f"runs:/{result.run_id}/model")
    vectors = model.encode(["a cat sat on the mat", "stocks fell sharply"])
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()


def test_training_changes_the_weights(run_job):
    import mlflow

    from pipeline.stages.build import load_model
    from tests.conftest import compose_config

    result = run_job(*SMOKE)
    trained = mlflow.sentence_transformers.load_model(f"runs:/{result.run_id}/model")
    initial = load_model(compose_config(list(SMOKE)).model, seed=42)
    before = dict(initial.named_parameters())
    changed = [
        name
        for name, p in trained.named_parameters()
        if not np.allclose(p.detach().numpy(), before[name].detach().numpy())
    ]
    assert len(changed) > len(before) // 2, changed


def test_same_config_and_seed_give_identical_metrics(run_job, store, capsys):
    first, second = run_job(*SMOKE), run_job(*SMOKE)
    assert first.metrics == second.metrics and first.metrics
    # compared item by item: every final metric differs by 0, interval [0, 0], p = 1
    code, out, err = in_process("compare", capsys, "--tracking-uri", store["uri"], "--format", "csv",
                                "--runs", first.run_id, second.run_id)  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["metric"] for r in rows} == {n for n in first.metrics if not n.startswith("baseline/")}
    for row in rows:
        assert [float(row[k]) for k in ("delta", "ci_low", "ci_high", "p_value", "p_holm")] == [0, 0, 0, 1, 1], row
        assert float(row["a"]) == pytest.approx(first.metrics[row["metric"]], abs=1e-6)  # the items give the metric


def test_load_evaluate_without_training(run_job, mlflow_client):
    result = run_job(*SMOKE, "stages=[load,evaluate]")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert "loss" not in run.data.metrics and "sts-test_spearman_cosine" in run.data.metrics
    assert logged_models(mlflow_client, run) == []  # evaluate-only: nothing trained, no model logged


def test_cli_prints_summary_and_writes_one_run(cli, mlflow_client):
    collections = []  # (generation, objects frozen) of each collection up to the first with start-up frozen

    def seen(phase, info):
        if phase == "start" and not (collections and collections[-1][1]):
            collections.append((info["generation"], gc.get_freeze_count()))

    gc.callbacks.append(seen)
    try:
        out = cli(*SMOKE, in_process=True)
    finally:
        gc.callbacks.remove(seen)
    assert out.returncode == 0, out.stderr[-3000:]
    # the collector paused through start-up (runtime.collector), then on again with start-up's objects
    # frozen; as the test's process had it after the command
    automatic = [c for c in collections if c[0] < 2 and not c[1]]
    assert len(automatic) < 20 and collections[-1][1] > 100_000, (len(automatic), collections[-5:])
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert "FINISHED" in out.stdout and "mlflow ui --backend-store-uri" in out.stdout
    runs = all_runs(mlflow_client)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_id in out.stdout
    # each final metric's change from the baseline with its 95% interval (from the run's items files)
    changes = [line for line in out.stdout.splitlines() if "from baseline" in line]
    interval = re.compile(r"\([+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\] from baseline \d\.\d{4}\)$")
    assert len(changes) == 4 and all(interval.search(line) for line in changes), changes
    # not a terminal: one plain progress line per logging step (logging_steps=1 in smoke), no loss dicts
    progress = [line for line in out.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["1/2", "2/2"], out.stderr[-3000:]
    assert "loss " in progress[0] and "{'loss'" not in out.stderr


@pytest.mark.parametrize(
    "loss,data,evaluator",
    [
        ("cosent", "stsb", "sts"),
        ("triplet", "nli_triplets", "triplet"),
        ("gist", "example", "sts"),
        ("cached_mnrl", "example", "sts"),
    ],
)
def test_every_loss_trains_in_smoke(run_job, mlflow_client, loss, data, evaluator):
    result = run_job(f"loss={loss}", f"data={data}", f"evaluator={evaluator}", *SMOKE)
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert all(math.isfinite(v) for v in result.metrics.values()) and result.metrics
    # per-item scores of the final evaluation and the baseline reproduce every metric logged
    final = check_items_reproduce(mlflow_client, run)
    assert final == {name for name in result.metrics if not name.startswith("baseline/")}
    assert check_items_reproduce(mlflow_client, run, "items/baseline", prefix="baseline/") == final
    columns = {"sts": ["score", "label"], "triplet": ["positive", "negative", "correct"]}[evaluator]
    assert list(logged_items(mlflow_client, run)[f"{evaluator}-test.parquet"][0].columns) == columns

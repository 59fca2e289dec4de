"""Every experiment smoke-runs to a FINISHED MLflow run; several train sets train together; the
allnli recipe trains on real NLI triplets and reports STSb dev/test metrics."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from pipeline import REPO_ROOT
from pipeline.stages.spec import read_spec
from pipeline.tracking import metric_key
from tests.conftest import SHARED_DATA, compose_config

# Discovered, not listed: an experiment added to experiments/ is smoke-run the day it lands.
EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "experiments").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_run_finishes_with_its_loss_and_metrics(name, run_job, mlflow_client, caplog):
    cfg = compose_config([f"experiment={name}", "debug=smoke"])
    with caplog.at_level(logging.INFO, logger="pipeline.runtime.hardware"):
        result = run_job(f"experiment={name}", "debug=smoke")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["loss._target_"] == cfg.loss._target_
    assert params["training.multi_dataset_batch_sampler"] == cfg.training.multi_dataset_batch_sampler
    assert tags["pipeline.experiment"] == name
    # the card's precision intent and what ran here, both recorded
    assert tags["precision.intended"] == ("fp16" if cfg.training.fp16 else "fp32")
    assert tags["precision.effective"] in ("fp32", "bf16")
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name == "pipeline.runtime.hardware" and "Precision" in r.getMessage()
    ]
    assert len(said) == 1 and tags["precision.effective"] in said[0], said  # the console says it once
    if cfg.training.fp16:
        assert "asks for fp16" in said[0]
    assert [m.step for m in mlflow_client.get_metric_history(result.run_id, "loss")] == [1, 2]
    assert all(math.isfinite(v) for v in metrics.values())
    for spec in read_spec(cfg).evaluators:  # the evaluate stage's metrics under the evaluators' own names
        for split in spec.splits:
            assert metric_key(f"{spec.name}-{split}_{spec.primary_metric}") in metrics
    if str(cfg.training.eval_strategy) != "no":  # evaluation during training: eval_ prefix
        assert any(key.startswith("eval_") for key in metrics), sorted(metrics)
    card = Path(mlflow_client.download_artifacts(result.run_id, "model_card.md")).read_text()
    assert cfg.loss._target_.rsplit(".", 1)[-1] in card and "### Training Logs" in card


@pytest.mark.slow
def test_several_train_sets_train_together_round_robin(run_job, mlflow_client):
    result = run_job("data=nli_stsb_pairs", "debug=smoke", "training.multi_dataset_batch_sampler=round_robin")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.multi_dataset_batch_sampler"] == "round_robin"
    training = sorted(i.dataset.name for i in run.inputs.dataset_inputs if i.tags[0].value == "training")
    assert training == ["nli-train", "stsb-train"]
    assert all(math.isfinite(v) for v in result.metrics.values()) and "sts-test_spearman_cosine" in result.metrics
    card = Path(mlflow_client.download_artifacts(result.run_id, "model_card.md")).read_text()
    assert "#### nli" in card and "#### stsb" in card  # one section per training set


@pytest.mark.realdata
@pytest.mark.slow
def test_allnli_recipe_on_local_snli_triplets_reports_sts_dev_and_test(run_job, mlflow_client):
    result = run_job(
        "experiment=allnli",
        "model=tiny",
        "data=nli_triplets",
        f"data.local_dir={SHARED_DATA / 'snli'}",
        "data.splits.train=dev",
        f"eval_data.local_dir={SHARED_DATA / 'stsb'}",
        "training.max_steps=2",
        "training.per_device_train_batch_size=32",
        "training.eval_steps=2",
        "training.logging_steps=1",
    )
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for name in ("sts-dev_spearman_cosine", "sts-test_spearman_cosine"):
        assert math.isfinite(result.metrics[name]), name
    during = mlflow_client.get_metric_history(result.run_id, "eval_sts-dev_spearman_cosine")
    assert [m.step for m in during] == [2]
    assert run.data.tags["precision.intended"] == "fp16"
    sources = {i.dataset.name: i.dataset.source for i in run.inputs.dataset_inputs}
    assert "snli/dev.csv" in sources["nli_triplets-train"] and "stsb/test.csv" in sources["stsb-test"]

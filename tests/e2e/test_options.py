"""Training options end to end on the tiny model: early stopping with the best model kept, prompts,
Matryoshka dimensions and LoRA adapters, each checked in the run and in the model loaded back from MLflow."""

from __future__ import annotations

import pytest

SMOKE = ("debug=smoke",)
EVERY_STEP = ("training.eval_strategy=steps", "training.eval_steps=1")


def test_early_stopping_stops_restores_the_best_checkpoint_and_logs_it(run_job, mlflow_client):
    # threshold 1.0: no evaluation counts as an improvement, so patience 2 stops after the 3rd of 10 steps
    result = run_job(*SMOKE, *EVERY_STEP, "training.max_steps=10", "early_stopping.patience=2",
                     "early_stopping.threshold=1.0")  # fmt: skip
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    history = mlflow_client.get_metric_history(result.run_id, "eval_sts-dev_spearman_cosine")
    scores = {m.step: m.value for m in history}
    assert sorted(scores) == [1, 2, 3]  # stopped early
    best_step = max(scores, key=scores.get)
    metrics = run.data.metrics
    assert metrics["best_step"] == best_step
    assert metrics["best_sts-dev_spearman_cosine"] == pytest.approx(scores[best_step])
    # the final evaluation (and the logged model) is the best checkpoint's, not the last step's
    assert metrics["sts-dev_spearman_cosine"] == pytest.approx(scores[best_step], abs=1e-6)
    assert run.data.params["early_stopping.patience"] == "2"

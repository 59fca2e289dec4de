"""Early stopping with a LoRA adapter, Matryoshka dimensions and prompts in one run (tiny model): the best
checkpoint is really restored (re-evaluated on dev, it scores the trainer's ``best_metric``), the run
replays, and a restore that fails ends the run FAILED with the reason instead of logging the last model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline import PipelineError

# threshold 1.0: no evaluation counts as an improvement, so patience 2 stops after the 3rd evaluation;
# lr 2.0 overshoots, so the best checkpoint is an earlier one than the last
COMBINED = ("debug=smoke", "training.eval_strategy=steps", "training.eval_steps=1", "training.max_steps=10",
            "early_stopping.patience=2", "early_stopping.threshold=1.0", "training.learning_rate=2.0",
            "model.peft.r=4", "loss.matryoshka_dims=[32,16]", "+data.prompts.anchor='query: '",
            "+data.prompts.positive='document: '")  # fmt: skip
METRIC = "sts-dev_spearman_cosine"


@pytest.mark.slow
def test_early_stopping_with_lora_matryoshka_and_prompts_restores_the_best_and_replays(
    run_job, mlflow_client, store, capsys, tmp_path
):
    import mlflow
    import numpy as np

    from pipeline import rerun
    from pipeline.stages.build import load_model
    from tests.conftest import compose_config

    result = run_job(*COMBINED)
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("failure_reason")
    scores = {m.step: m.value for m in mlflow_client.get_metric_history(result.run_id, f"eval_{METRIC}")}
    best_step = max(scores, key=scores.get)
    assert sorted(scores) == [1, 2, 3] and best_step < 3 and scores[3] < scores[best_step]
    metrics = run.data.metrics
    assert metrics["best_step"] == best_step and metrics[f"best_{METRIC}"] == pytest.approx(scores[best_step])
    # the final dev score is the restored best checkpoint's, at full size; the truncated sizes are scored too
    assert metrics[METRIC] == pytest.approx(scores[best_step], abs=1e-6)
    assert {"sts-dev-16_spearman_cosine", "sts-test-16_spearman_cosine"} <= set(metrics)
    assert run.data.params["data.prompts.anchor"] == "query: "
    # the logged model is the adapter merged in: it embeds as the logged adapter on the base model does
    merged = mlflow.sentence_transformers.load_model(f"runs:/{result.run_id}/model")
    base = load_model(compose_config(list(COMBINED)).model, seed=42)
    base.load_adapter(mlflow_client.download_artifacts(result.run_id, "adapter", str(tmp_path)))
    text = ["a cat sat on the mat", "stocks fell sharply"]
    for options in ({"prompt": "query: "}, {"truncate_dim": 16}):
        np.testing.assert_allclose(merged.encode(text, **options), base.encode(text, **options), rtol=1e-3, atol=1e-3)
    code = rerun.main([result.run_id, "--tracking-uri", store["uri"]])
    assert code == 0, capsys.readouterr().err[-3000:]
    replay = mlflow_client.search_runs(
        [result.experiment_id], filter_string=f"tags.`pipeline.rerun_of` = '{result.run_id}'"
    )
    assert len(replay) == 1 and replay[0].info.status == "FINISHED"
    assert replay[0].data.metrics["best_step"] == best_step
    assert replay[0].data.metrics[METRIC] == pytest.approx(metrics[METRIC], abs=1e-6)


@pytest.mark.slow
def test_a_best_checkpoint_that_cannot_be_restored_ends_the_run_failed_with_the_reason(
    run_job, mlflow_client, tmp_path, monkeypatch
):
    import tempfile

    from pipeline.runtime import checkpoint

    # the tiny model's base folder (named in each adapter checkpoint) lives under the temp folder: a private
    # one here, removed once the first checkpoint is saved, so the trainer cannot load the best one back
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    commit = checkpoint.commit

    def commit_then_lose_the_base(folder, step):
        commit(folder, step)
        shutil.rmtree(tmp_path / "tmp" / f"pipeline-{os.getuid()}" / "models", ignore_errors=True)

    monkeypatch.setattr(checkpoint, "commit", commit_then_lose_the_base)
    with pytest.raises(PipelineError, match="was not restored") as raised:
        run_job(*COMBINED)
    assert "Could not load the best model" in str(raised.value)
    (run,) = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    assert run.info.status == "FAILED"
    assert "was not restored" in run.data.tags["failure_reason"]
    assert "best_step" not in run.data.metrics and METRIC not in run.data.metrics  # no final metrics, no model
    assert not Path(tmp_path / "tmp" / f"pipeline-{os.getuid()}" / "models").exists()

"""Real data from ../shared/data (STS Benchmark): the published MiniLM figure, and a fine-tune
that does not lose quality. Skipped when ../shared/data is absent."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
STSB = f"data.local_dir={SHARED_DATA / 'stsb'}"
PUBLISHED_MINILM_STSB_TEST = 0.8203


def test_minilm_scores_the_published_stsb_figure_and_a_short_mnrl_finetune_keeps_quality(run_job, mlflow_client):
    """One MiniLM run: its baseline (the unchanged model, scored before training by the same evaluator)
    is the published STSb test figure; 20 steps on the STSb train pairs lose no quality."""
    result = run_job(
        "model=minilm",
        "data=stsb_pairs",
        STSB,
        "evaluators.sts.splits=[test]",
        "training.max_steps=20",
        "tracking.log_model=false",
    )
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    baseline = result.metrics["baseline/sts-test_spearman_cosine"]
    assert baseline == pytest.approx(PUBLISHED_MINILM_STSB_TEST, abs=5e-4), "unchanged MiniLM: not the published figure"
    assert run.data.params["data.train_transform.min_score"] == "4.0"
    # 1,406 train pairs are scored >= 4.0; the lineage records the transformed training set
    training = [i for i in run.inputs.dataset_inputs if i.tags[0].value == "training"]
    assert training and '"num_rows": 1406' in training[0].dataset.profile, "lineage: not the transformed train set"
    tuned = result.metrics["sts-test_spearman_cosine"]
    assert tuned >= PUBLISHED_MINILM_STSB_TEST - 0.002, f"the fine-tune lost quality: {tuned:.4f}"


TRECQA = f"data.local_dir={SHARED_DATA / 'trecqa'}"
PUBLISHED_MINILM_TRECQA_DEV_NDCG10 = 0.6568  # ../shared/data/README.md


def test_trecqa_recipe_end_to_end_from_the_published_baseline(run_job, mlflow_client, tmp_path):
    """The shipped recipe, shortened: the unchanged model's dev NDCG@10 as the data README gives it
    (78 questions with an answer, the split's 1,038 answer sentences), mined triplets, a few steps."""
    result = run_job(
        "experiment=trecqa_mined",
        TRECQA,
        "mine.corpus=positives",  # the 348 train positives as candidates: seconds, not minutes
        f"mine.cache_dir={tmp_path / 'mined'}",
        "training.max_steps=4",
        "tracking.log_model=false",
    )
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    baseline = result.metrics["baseline/ir-dev_cosine_ndcg@10"]
    assert baseline == pytest.approx(PUBLISHED_MINILM_TRECQA_DEV_NDCG10, abs=5e-4)
    assert run.data.metrics["ir-dev_cosine_ndcg_at_10"] == pytest.approx(result.optimized_metric)
    assert run.data.tags["mine.cache"] == "miss"
    mined = [i for i in run.inputs.dataset_inputs if i.dataset.name == "trecqa-mined"]
    assert mined and '"num_rows": 0' not in mined[0].dataset.profile

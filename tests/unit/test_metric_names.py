"""Metric names: sentence-transformers' spelling <-> MLflow's, in one place (``pipeline.tracking.scrub``)."""

from __future__ import annotations

import pytest

from pipeline.tracking.scrub import metric_key, metric_name


@pytest.mark.parametrize(
    ("ours", "stored"),
    [
        ("ir-dev_cosine_ndcg@10", "ir-dev_cosine_ndcg_at_10"),
        ("ir-test-128_cosine_recall@1", "ir-test-128_cosine_recall_at_1"),
        ("eval_ir-dev_cosine_map@100", "eval_ir-dev_cosine_map_at_100"),
        ("baseline/ir-dev_cosine_mrr@10", "baseline/ir-dev_cosine_mrr_at_10"),
        ("sts-dev_spearman_cosine", "sts-dev_spearman_cosine"),
    ],
)
def test_a_metric_name_translates_both_ways_and_either_spelling_is_accepted(ours, stored):
    assert metric_key(ours) == stored
    assert metric_name(stored) == ours
    assert metric_key(stored) == stored and metric_name(ours) == ours  # already in that spelling: unchanged


def test_only_a_cut_off_is_read_back_as_an_at_sign():
    assert metric_name("job_at_home-dev_f1") == "job_at_home-dev_f1"  # "_at_" not before a number

"""Per-item scores (``pipeline.stages.items``, read back by ``pipeline.tracking.items``) of evaluators that report several similarity functions,
through the evaluate stage itself on the tiny model: suffixed columns, every non-derived metric
reproduced from the rows, the evaluators left as they were. (Single-function files, the baseline and
the MLflow artifacts: the jobs of test_spine, test_retrieval, test_options, test_baseline_cache.)"""

from __future__ import annotations

import pytest

from tests.conftest import compose_config


def test_several_similarity_functions_give_suffixed_columns_that_reproduce_each_metric(tmp_path):
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator,
        SequentialEvaluator,
        TripletEvaluator,
    )
    from sentence_transformers.util import cos_sim, dot_score

    from pipeline.stages.build import load_model
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.smoke import smoke_split
    from pipeline.tracking import intervals
    from pipeline.tracking.items import METADATA, read, read_file

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    pairs = smoke_split(["sentence1", "sentence2", "score"], "test").dataset.to_dict()
    triplets = smoke_split(["anchor", "positive", "negative"], "test").dataset.to_dict()
    functions = ["cosine", "dot", "euclidean", "manhattan"]
    sts = EmbeddingSimilarityEvaluator(
        pairs["sentence1"], pairs["sentence2"], pairs["score"], name="sts-test", similarity_fn_names=functions
    )
    truncated = EmbeddingSimilarityEvaluator(
        pairs["sentence1"], pairs["sentence2"], pairs["score"], name="sts-test-8", truncate_dim=8
    )
    triplet = TripletEvaluator(
        triplets["anchor"], triplets["positive"], triplets["negative"], name="triplet-test",
        similarity_fn_names=["cosine", "euclidean"], margin={"cosine": 0.01, "euclidean": 0.0},
    )  # fmt: skip
    queries = {f"q{i}": text for i, text in enumerate(triplets["anchor"])}
    corpus = {f"d{i}": text for i, text in enumerate(triplets["positive"] + triplets["negative"])}
    ir = InformationRetrievalEvaluator(
        queries, corpus, {f"q{i}": {f"d{i}"} for i in range(len(queries))}, name="ir-test",
        score_functions={"cosine": cos_sim, "dot": dot_score}, mrr_at_k=[3], ndcg_at_k=[3],
    )  # fmt: skip
    evaluators = {"sts": SequentialEvaluator([sts, truncated]), "triplet": triplet, "ir": ir}
    outcome = evaluate(model, evaluators, tmp_path)

    files = {path.name: read_file(path) for path in outcome.items}
    assert sorted(files) == ["ir-test.parquet", "sts-test-8.parquet", "sts-test.parquet", "triplet-test.parquet"]
    assert all(path.parent == tmp_path / "items" for path in outcome.items)
    assert list(files["sts-test.parquet"][0].columns) == [f"score_{fn}" for fn in functions] + ["label"]
    assert list(files["sts-test-8.parquet"][0].columns) == ["score", "label"]
    assert list(files["triplet-test.parquet"][0].columns) == [
        "positive_cosine", "negative_cosine", "correct_cosine",
        "positive_euclidean", "negative_euclidean", "correct_euclidean",
    ]  # fmt: skip
    ir_rows = files["ir-test.parquet"][0]
    assert list(ir_rows["query_id"]) == list(queries) and "dot_mrr@3" in ir_rows and "cosine_ndcg@3" in ir_rows
    listed = set()
    for path in outcome.items:
        for metric, scored in read(path).items():
            assert intervals.value(scored.items) == pytest.approx(outcome.metrics[metric], abs=1e-6), (path, metric)
            listed.add(metric)
    derived = {"sts-test_pearson_max", "sts-test_spearman_max", "triplet-test_max_accuracy"}
    assert listed == set(outcome.metrics) - derived  # every metric the rows aggregate to, nothing derived
    import pyarrow.parquet as pq

    assert METADATA in pq.read_schema(outcome.items[0]).metadata
    # the wrappers are gone: the instances use their classes' methods again
    assert not {"embed_inputs", "compute_metrics"} & (set(vars(sts)) | set(vars(triplet)) | set(vars(ir)))

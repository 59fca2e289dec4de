"""Retrieval evaluation from the config and the rows alone (no model): the evaluator's inputs, the
evaluator list, the optimized metric check, the corpus file."""

from __future__ import annotations

import pytest
from datasets import Dataset

from pipeline import PipelineError
from pipeline.stages.build import retrieval_inputs
from pipeline.stages.load import read_corpus
from pipeline.stages.spec import read_spec
from pipeline.stages.splits import Split
from pipeline.stages.transforms import judged_pairs
from pipeline.stages.validate import check_optimized_metric
from tests.conftest import compose_config

LABELLED = {
    "anchor": ["q1", "q1", "q1", "q2", "q2", "q3"],
    "positive": ["a1", "b1", "c1", "a2", "b2", "c3"],
    "label": [1, 0, 1, 1, 0, 0],
}


def split(rows: dict) -> Split:
    return Split(Dataset.from_dict(rows), "rows.csv", "f")


def test_labelled_rows_give_deduplicated_queries_every_candidate_and_the_rows_labelled_1():
    queries, corpus, relevant = retrieval_inputs(split(LABELLED), ["anchor", "positive"], label="label")
    assert sorted(queries.values()) == ["q1", "q2"]  # q3 has no relevant row: dropped, not an error
    assert sorted(corpus.values()) == ["a1", "a2", "b1", "b2", "c1", "c3"]  # every candidate, relevant or not
    by_text = {qid: {corpus[c] for c in docs} for qid, docs in relevant.items()}
    assert sorted(by_text[qid] for qid in queries) == [{"a1", "c1"}, {"a2"}]


def test_triplets_put_negatives_in_the_corpus_and_positives_as_relevant():
    rows = {"anchor": ["q1", "q2"], "positive": ["p1", "p2"], "negative": ["n1", "p1"]}
    queries, corpus, relevant = retrieval_inputs(split(rows), ["anchor", "positive", "negative"])
    assert sorted(corpus.values()) == ["n1", "p1", "p2"]
    assert [{corpus[c] for c in relevant[q]} for q in queries] == [{"p1"}, {"p2"}]


def test_a_corpus_file_widens_the_corpus_and_duplicate_ids_are_refused(tmp_path):
    good = tmp_path / "corpus.csv"
    good.write_text("id,text\n7,extra one\n8,a1\n9,extra two\n")
    queries, corpus, _ = retrieval_inputs(split(LABELLED), ["anchor", "positive"], "label", read_corpus(str(good), "k"))
    assert sorted(corpus.values()) == ["a1", "a2", "b1", "b2", "c1", "c3", "extra one", "extra two"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n7,one\n8,two\n7,three\n")
    with pytest.raises(PipelineError, match=r"row 3, id '7' appears 2 times.*ids must be unique"):
        read_corpus(str(bad), "evaluator.corpus")


def test_no_query_with_a_relevant_row_is_an_error():
    rows = {"anchor": ["q1"], "positive": ["a1"], "label": [0]}
    with pytest.raises(PipelineError, match="no query has a relevant document"):
        retrieval_inputs(split(rows), ["anchor", "positive"], label="label")


def test_evaluators_list_selects_several_and_optimized_metric_must_be_one_of_theirs():
    spec = read_spec(compose_config(["evaluators=[sts,ir]"]))
    specs = spec.evaluators
    assert [e.name for e in specs] == ["sts", "ir"]
    names = [name for spec in specs for name in spec.logged_names()]
    assert "ir-dev_cosine_ndcg@10" in names and "sts-dev_spearman_cosine" in names
    check_optimized_metric(spec.optimized_metric, specs)  # the default: sts-dev_spearman_cosine
    with pytest.raises(PipelineError, match=r"optimized_metric='ir-dev_cosine_ndcg@100'.*ir-dev_cosine_ndcg@10"):
        check_optimized_metric("ir-dev_cosine_ndcg@100", specs)
    with pytest.raises(PipelineError, match="evaluators.ir: an evaluator named 'sts' is already configured"):
        read_spec(compose_config(["evaluators=[sts,ir]", "evaluators.ir.name=sts"]))


def test_judged_pairs_keep_positives_and_add_judged_negatives():
    rows = Dataset.from_dict(LABELLED)
    pairs = judged_pairs(rows)
    assert pairs.column_names == ["anchor", "positive"] and len(pairs) == 3
    triplets = judged_pairs(rows, negatives="labelled")
    assert list(zip(triplets["anchor"], triplets["positive"], triplets["negative"])) == [
        ("q1", "a1", "b1"),
        ("q1", "c1", "b1"),
        ("q2", "a2", "b2"),
    ]


def test_mine_needs_pairs_and_a_range_that_holds_the_negatives():
    from pipeline.stages.validate import check_config

    check_config(read_spec(compose_config(["stages=[load,mine,train,evaluate]"])))  # (anchor, positive): fine
    with pytest.raises(PipelineError, match=r"mine stage needs \(anchor, positive\) pairs; data 'allnli_triplets'"):
        check_config(read_spec(compose_config(["experiment=allnli", "stages=[load,mine,train,evaluate]"])))
    with pytest.raises(PipelineError, match=r"mine.range_max=2 .* fewer than mine.num_negatives=3"):
        check_config(
            read_spec(compose_config(["stages=[load,mine,train,evaluate]", "mine.range_max=2", "mine.num_negatives=3"]))
        )
    with pytest.raises(PipelineError, match="order load, mine, train, evaluate"):
        check_config(read_spec(compose_config(["stages=[load,train,mine,evaluate]"])))

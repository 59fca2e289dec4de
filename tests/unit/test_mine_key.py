"""The mine stage's cache key from the rows and the config alone (no model), and its option checks."""

from __future__ import annotations

import pytest
from datasets import Dataset

from pipeline import PipelineError
from pipeline.stages import build, mine
from pipeline.stages.spec import read_spec
from pipeline.stages.splits import Split
from tests.conftest import compose_config

PAIRS = {"anchor": ["q1", "q2", "q3"], "positive": ["a1", "a2", "a3"]}


def key(rows: dict, corpus=None, prompts=None, *overrides: str) -> str:
    cfg = compose_config(["model=tiny", "stages=[load,mine,train,evaluate]", *overrides])
    train = Split(Dataset.from_dict(rows), "train.csv", "same-file-sha")
    prompts = mine.prompts_for(train, prompts or {})
    miner_key = build.model_key(cfg.model, cfg.seed, "model")
    inputs = mine.key_inputs(train, corpus, cfg.model, cfg.seed, cfg.mine, prompts, read_spec(cfg).leaves, miner_key)
    return mine.cache_key(inputs)


def test_the_key_covers_rows_direction_corpus_prompts_and_options_but_not_how_the_rows_were_built():
    base = key(PAIRS)
    assert key(dict(PAIRS)) == base  # same rows, another Dataset object (another datasets fingerprint)
    assert key({name: values[:2] for name, values in PAIRS.items()}) != base  # a row limit
    assert key({"positive": PAIRS["positive"], "anchor": PAIRS["anchor"]}) != base  # reversed direction
    assert key(PAIRS, ["a1", "a2", "a3", "x"]) != base
    assert key(PAIRS, None, {"anchor": "query: "}) != base
    assert key(PAIRS, None, {"positive": "passage: "}) != base
    assert key(PAIRS, None, {"negative": "passage: "}) == base  # not a column the miner reads
    assert key(PAIRS, None, None, "mine.range_max=10") != base
    assert key(PAIRS, None, None, "seed=7") != base  # model=tiny is built from a config: its seed matters


def test_mine_cache_max_age_days_is_a_number_of_days_or_null():
    from pipeline.stages.validate import check_config

    check_config(read_spec(compose_config(["stages=[load,mine,train,evaluate]", "mine.cache_max_age_days=7"])))
    for bad in ("-1", "soon", "true"):
        with pytest.raises(PipelineError, match=r"mine.cache_max_age_days=\S+: a number of days >= 0"):
            check_config(
                read_spec(compose_config(["stages=[load,mine,train,evaluate]", f"mine.cache_max_age_days={bad}"]))
            )


def test_the_mined_negatives_train_with_the_positive_columns_prompt(store_overrides, tmp_path):
    from pipeline.job import preflight

    prompts = ["+data.prompts.anchor='query: '", "+data.prompts.positive='passage: '"]
    cfg = compose_config(["stages=[load,mine,train,evaluate]", *prompts, *store_overrides])
    assert preflight(cfg, tmp_path, None).args.prompts == {
        "anchor": "query: ",
        "positive": "passage: ",
        "negative": "passage: ",
    }

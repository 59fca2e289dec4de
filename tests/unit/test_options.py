"""Training options' config checks: each mistake is one PipelineError naming the key and the fix,
raised before any data or model loads."""

from __future__ import annotations

import pytest

from pipeline import PipelineError
from pipeline.stages import validate
from pipeline.stages.spec import read_spec
from tests.conftest import compose_config

SMOKE = ["debug=smoke", "training.eval_strategy=steps", "training.eval_steps=1"]


def _error(overrides: list[str]) -> str:
    with pytest.raises(PipelineError) as caught:
        validate.check_config(read_spec(compose_config(overrides)))
    return str(caught.value)


def test_early_stopping_composes_and_passes_with_an_evaluator_and_evaluations():
    spec = read_spec(compose_config([*SMOKE, "early_stopping.patience=3"]))
    validate.check_config(spec)
    assert spec.early_stopping is not None and spec.early_stopping.patience == 3
    assert read_spec(compose_config(SMOKE)).early_stopping is None
    assert (
        read_spec(compose_config(["debug=smoke", "stages=[load,evaluate]", "early_stopping.patience=3"])).early_stopping
        is None
    )


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["debug=smoke", "early_stopping.patience=2"], ["training.eval_strategy=no", "training.eval_strategy=steps"]),
        ([*SMOKE, "evaluators=[]", "early_stopping.patience=2"], ["evaluators=[]", "evaluators=[sts]"]),
        ([*SMOKE, "early_stopping.patience=0"], ["early_stopping.patience=0", ">= 1"]),
        ([*SMOKE, "early_stopping.patience=2", "optimized_metric=sts-test_spearman_cosine"],
         ["optimized_metric='sts-test_spearman_cosine'", "sts-dev_spearman_cosine"]),
    ],
)  # fmt: skip
def test_early_stopping_mistakes_name_the_key_and_the_fix(overrides, fragments):
    message = _error(overrides)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["loss.matryoshka_dims=[16,32]"], ["loss.matryoshka_dims=[16, 32]", "largest first"]),
        (["loss.matryoshka_dims=[64,16]"], ["64 is larger than the model's embedding dimension 32"]),
        (["loss.matryoshka_dims=[32,16]", "loss.matryoshka_weights=[1]"], ["loss.matryoshka_weights=[1]", "one"]),
        (["+data.prompts.query='q: '"], ["data.prompts.query", "['anchor', 'positive']"]),
        (["data=stsb", "loss=cosent", "+data.prompts.score='s: '"], ["data.prompts.score", "['sentence1', 'sentence2']"]),
    ],
)  # fmt: skip
def test_matryoshka_and_prompt_mistakes_name_the_key_and_the_fix(overrides, fragments):
    message = _error(["debug=smoke", *overrides])
    for fragment in fragments:
        assert fragment in message, message


def test_prompts_reach_the_evaluator_columns_by_position():
    spec = read_spec(
        compose_config(["debug=smoke", "+data.prompts.anchor='query: '", "+data.prompts.positive='doc: '"])
    )
    validate.check_config(spec)
    assert spec.prompts == {"anchor": "query: ", "positive": "doc: "}
    assert spec.evaluators[0].prompts == ("query: ", "doc: ")  # sentence1, sentence2
    triplet = read_spec(compose_config(["debug=smoke", "evaluator=triplet", "+data.prompts.anchor='query: '"]))
    assert triplet.evaluators[0].prompts == ("query: ", None, None)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model.peft.r=0"], ["model.peft.r=0", ">= 1"]),
        (["model.peft.r=4", "model.peft.dropout=1.5"], ["model.peft.dropout=1.5", "[0, 1)"]),
        (["model.peft.r=4", "model.peft.target_modules=qkv"], ["model.peft.target_modules='qkv'", "[query,value]"]),
    ],
)
def test_peft_mistakes_name_the_key_and_the_fix(overrides, fragments):
    message = _error(["debug=smoke", *overrides])
    for fragment in fragments:
        assert fragment in message, message


def test_register_as_needs_a_trained_and_logged_model():
    for overrides in (["stages=[load,evaluate]"], ["tracking.log_model=false"]):
        message = _error(["debug=smoke", "tracking.register_as=mine", *overrides])
        assert "tracking.register_as registers the trained model" in message, message
    validate.check_config(read_spec(compose_config(["debug=smoke", "tracking.register_as=mine"])))


def test_an_evaluator_batch_size_is_refused_for_the_profile_s():
    """The evaluators encode in hardware.eval_batch_size batches: an evaluator's batch_size would be ignored."""
    message = _error(["debug=smoke", "+evaluators.sts.evaluator.batch_size=8"])
    assert "evaluators.sts.evaluator.batch_size=8 would be ignored" in message and "hardware.eval_batch_size" in message

"""The catalogue of library classes' facts (pipeline.runtime.catalogue): every class the configs name has
an entry, and a class without one is refused in one line before any model loads, never skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import CONF_DIR, PipelineError
from pipeline.runtime import catalogue
from pipeline.stages import validate
from pipeline.stages.spec import read_spec
from tests.conftest import compose_config


def test_every_loss_and_evaluator_option_has_an_entry():
    for option in sorted(p.stem for p in Path(CONF_DIR, "loss").glob("*.yaml")):
        assert catalogue.loss(read_spec(compose_config([f"loss={option}"])).loss.class_name)
    for option in sorted(p.stem for p in Path(CONF_DIR, "evaluator").glob("*.yaml")):
        for evaluator in read_spec(compose_config([f"evaluator={option}"])).evaluators:
            assert catalogue.evaluator(evaluator.target.rsplit(".", 1)[-1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["loss._target_=sentence_transformers.sentence_transformer.losses.ContrastiveLoss"],
            "loss ContrastiveLoss: pipeline/runtime/catalogue.py has no entry for it",
        ),
        (
            ["evaluator._target_=sentence_transformers.sentence_transformer.evaluation.BinaryClassificationEvaluator"],
            "evaluator 'sts': pipeline/runtime/catalogue.py has no entry for BinaryClassificationEvaluator",
        ),
    ],
)
def test_a_class_without_an_entry_is_refused_in_one_line(overrides, message):
    with pytest.raises(PipelineError, match=message) as error:
        validate.check_config(read_spec(compose_config(["debug=smoke", *overrides])))
    assert "\n" not in str(error.value)

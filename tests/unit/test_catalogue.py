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
    options = sorted(p.stem for p in Path(CONF_DIR, "evaluators").glob("*.yaml"))
    evaluators = read_spec(compose_config([f"evaluators=[{','.join(options)}]"])).evaluators
    assert [e.name for e in evaluators] == options
    for evaluator in evaluators:
        assert catalogue.evaluator(evaluator.target.rsplit(".", 1)[-1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["loss._target_=sentence_transformers.sentence_transformer.losses.ContrastiveLoss"],
            "loss ContrastiveLoss: pipeline/runtime/catalogue.py has no entry for it",
        ),
        (
            [
                "evaluators.sts.evaluator._target_="
                "sentence_transformers.sentence_transformer.evaluation.BinaryClassificationEvaluator"
            ],
            "evaluator 'sts': pipeline/runtime/catalogue.py has no entry for BinaryClassificationEvaluator",
        ),
    ],
)
def test_a_class_without_an_entry_is_refused_in_one_line(overrides, message):
    with pytest.raises(PipelineError, match=message) as error:
        validate.check_config(read_spec(compose_config(["debug=smoke", *overrides])))
    assert "\n" not in str(error.value)


EVALUATION = "sentence_transformers.sentence_transformer.evaluation"


@pytest.mark.parametrize(
    ("arguments", "primary", "logged"),
    [
        ({"_target_": f"{EVALUATION}.EmbeddingSimilarityEvaluator"}, "spearman_cosine", {"pearson_cosine"}),
        ({"_target_": f"{EVALUATION}.EmbeddingSimilarityEvaluator", "main_similarity": "dot"}, "spearman_dot", set()),
        (
            {"_target_": f"{EVALUATION}.EmbeddingSimilarityEvaluator", "similarity_fn_names": ["cosine", "dot"]},
            "spearman_max",
            {"spearman_cosine", "pearson_dot"},
        ),
        (
            {"_target_": f"{EVALUATION}.InformationRetrievalEvaluator", "ndcg_at_k": [5]},
            "cosine_ndcg@5",
            {"cosine_mrr@10"},
        ),
        ({"_target_": f"{EVALUATION}.TripletEvaluator", "main_similarity_function": "dot"}, "dot_accuracy", set()),
    ],
)
def test_the_metrics_an_evaluator_logs_come_from_its_class(arguments, primary, logged):
    """The class run on two rows says what it logs with these arguments: no list copied by hand."""
    found_primary, names = catalogue.logged_metrics(arguments, "e")
    assert found_primary == primary and primary in names and logged <= set(names)
    if "main_similarity" in arguments or "main_similarity_function" in arguments:
        assert not any("cosine" in name for name in names)  # dot only


def test_an_evaluator_refusing_its_arguments_is_refused_in_one_line():
    arguments = {"_target_": f"{EVALUATION}.EmbeddingSimilarityEvaluator", "main_similarity": "cosnie"}
    with pytest.raises(PipelineError, match="evaluators.sts.evaluator: EmbeddingSimilarityEvaluator refused") as error:
        catalogue.logged_metrics(arguments, "sts")
    assert "\n" not in str(error.value) and "cosnie" in str(error.value)

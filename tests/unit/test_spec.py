"""The job spec: each fact of a job derived once from the composed config (``pipeline.stages.spec``)."""

from __future__ import annotations

from omegaconf import OmegaConf

from pipeline.stages.spec import Stages, read_spec
from tests.conftest import compose_config

EVALUATES = ["debug=smoke", "training.eval_strategy=steps", "training.eval_steps=1"]


def test_the_spec_derives_stages_evaluators_splits_metric_and_loss():
    spec = read_spec(compose_config([*EVALUATES, "evaluators=[sts,ir]"]))
    assert spec.stages == Stages(("load", "train", "evaluate"), mine=False, train=True, evaluate=True, baseline=True)
    assert spec.evaluates_during_training
    assert [e.name for e in spec.evaluators] == ["sts", "ir"]
    assert spec.splits_needed == {"dev": ("sts", "ir"), "test": ("sts", "ir")} and spec.eval_splits == ("dev", "test")
    assert (spec.optimized_metric, spec.direction) == ("sts-dev_spearman_cosine", "maximize")
    ir = spec.evaluator("ir")  # the pipeline's settings outside, the class's arguments in its evaluator node
    assert ir.columns == ("anchor", "positive") and ir.primary_metric == "cosine_ndcg@10" and ir.label == "label"
    assert ir.target.endswith("InformationRetrievalEvaluator") and ir.key == "evaluators.ir"
    assert {"_target_", "_partial_", "ndcg_at_k"} <= set(ir.arguments) and "columns" not in ir.arguments
    assert "cosine_mrr@10" in ir.metrics and "cosine_ndcg@10" in ir.metrics  # what the class logs
    assert spec.loss.class_name == "MultipleNegativesRankingLoss" and not spec.loss.needs_guide
    assert "matryoshka_dims" not in spec.loss.arguments and spec.loss.matryoshka_dims is None

    gist = read_spec(compose_config(["debug=smoke", "loss=gist"]))
    assert gist.loss.needs_guide and gist.guide is not None and not gist.evaluates_during_training
    evaluate_only = read_spec(compose_config(["debug=smoke", "loss=gist", "stages=[load,evaluate]"]))
    assert not evaluate_only.loss.needs_guide and not evaluate_only.stages.baseline  # nothing trains
    assert evaluate_only.splits_needed == {"dev": ("sts",), "test": ("sts",)}
    silent = read_spec(compose_config(["debug=smoke", "evaluator=none"]))
    assert silent.evaluators == () and silent.optimized_metric is None and silent.splits_needed == {}


def test_a_config_logged_before_a_node_existed_reads_with_that_node_off():
    old = compose_config(["debug=smoke"])
    OmegaConf.set_struct(old, False)
    for key in ("guard", "early_stopping", "baseline", "baseline_reuse", "optimized_metric"):
        del old[key]
    del old.model["peft"], old.data["prompts"], old.loss["matryoshka_dims"], old.loss["matryoshka_weights"]
    OmegaConf.set_struct(old, True)  # as pipeline.rerun replays it
    spec = read_spec(old)
    assert spec.guard is None and spec.early_stopping is None and spec.peft is None and spec.prompts == {}
    assert not spec.stages.baseline and spec.optimized_metric is None and spec.loss.matryoshka_dims is None
    assert [e.name for e in spec.evaluators] == ["sts"]


def test_optimized_metric_defaults_to_the_first_evaluator_that_runs():
    """The list's first evaluator is optimised; the former spellings keep their meaning (evaluator=NAME first)."""
    cases = {
        ("evaluators=[ir,sts]",): "ir-dev_cosine_ndcg@10",
        ("evaluators=[sts,ir]",): "sts-dev_spearman_cosine",
        ("evaluators=[]",): None,
        ("evaluator=none", "evaluators=[ir]"): "ir-dev_cosine_ndcg@10",
        ("evaluator=ir", "evaluators=[sts]"): "ir-dev_cosine_ndcg@10",
        ("evaluator=triplet",): "triplet-dev_cosine_accuracy",
        ("evaluator=none",): None,
        # the class's own primary metric follows its arguments
        ("evaluators.sts.evaluator.main_similarity=dot",): "sts-dev_spearman_dot",
        ("evaluators=[ir]", "evaluators.ir.evaluator.ndcg_at_k=[5]"): "ir-dev_cosine_ndcg@5",
    }
    for overrides, metric in cases.items():
        assert read_spec(compose_config(["debug=smoke", *overrides])).optimized_metric == metric, overrides

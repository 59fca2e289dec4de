"""Config checks that need no data and no model: they answer in well under a second.

``check_config`` reads the job spec (``pipeline.stages.spec``) and raises :class:`pipeline.PipelineError`
naming the key and the fix: the rules that relate several nodes (Matryoshka
against the model's size, the optimized metric, the loss's columns, early stopping, the guide,
registration, a CUDA device for a cuda profile). Each pipeline-owned value's type and range, and the rules
within one node, are declared in ``pipeline.stages.settings`` and checked before (``spec.read_spec``).
Checks that need more live where it exists: data checks (columns, cells, scores) with the reading code
in ``pipeline.stages.load``, checks against the loaded model in ``pipeline.stages.build``, the library's
own checks of ``training.*`` in ``pipeline.stages.train``, the tracking target in ``pipeline.tracking.store``.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from pipeline import PipelineError
from pipeline.runtime import catalogue, hardware
from pipeline.stages.spec import EvaluatorSpec, JobSpec, LossSpec
from pipeline.stages.splits import LABEL_COLUMNS


def check_config(spec: JobSpec) -> None:
    """Every config check that needs no data and no model, over the job spec (``spec.read_spec``)."""
    if spec.stages.mine:
        if spec.data.several:
            raise PipelineError(
                "the mine stage mines one train set; data.train_sets names several: drop mine from stages."
            )
        check_mine_layout(list(spec.data.layout), spec.data.name)
    _check_matryoshka(spec.loss, spec.model)
    for evaluator in spec.evaluators:
        _check_evaluator(evaluator)
    check_optimized_metric(spec.optimized_metric, spec.evaluators, spec.loss.matryoshka_dims)
    if spec.stages.train:
        _check_loss_columns(spec)
        _check_early_stopping(spec)
        _check_guide(spec)
    if spec.tracking.register_as and not (spec.tracking.log_model and spec.stages.train):
        raise PipelineError(
            "tracking.register_as registers the trained model: it needs tracking.log_model=true and a train stage."
        )
    if spec.stages.evaluate and not spec.evaluators and not spec.stages.train:
        raise PipelineError(
            "stages=[load,evaluate] with evaluators=[] evaluates nothing: pick evaluators=[sts], [triplet] or [ir]."
        )
    hardware.check_device(spec.hardware)  # a CUDA device for a cuda profile


def _check_evaluator(evaluator: EvaluatorSpec) -> None:
    """A class with a catalogue entry, no ``batch_size`` of its own, a primary metric the class logs."""
    class_name = evaluator.target.rsplit(".", 1)[-1]
    catalogue.evaluator(class_name, evaluator.name)  # a class without an entry: refused
    if "batch_size" in evaluator.arguments:  # build passes the profile's: the config's would be ignored
        raise PipelineError(
            f"evaluator {evaluator.name!r}: {evaluator.key}.evaluator.batch_size={evaluator.arguments.batch_size} "
            "would be ignored: the evaluators encode in hardware.eval_batch_size batches; set that instead."
        )
    if evaluator.primary_metric not in evaluator.metrics:
        raise PipelineError(
            f"{evaluator.key}.primary_metric={evaluator.primary_metric!r}: {class_name} with these arguments logs "
            f"{', '.join(evaluator.metrics)}: pick one of them (or null: the class's own)."
        )


def _check_loss_columns(spec: JobSpec) -> None:
    name = spec.loss.class_name
    facts = catalogue.loss(name)  # a loss without an entry: refused
    low, high, needs_label = facts.min_texts, facts.max_texts, facts.label
    data_name = spec.data.name
    for set_name, data in spec.data.train_sets.items():
        columns = list(data.layout) if data.train_columns else []
        columns += ["negative"] if spec.stages.mine else []  # the mine stage adds one
        texts = [c for c in columns if c not in LABEL_COLUMNS]
        labels = [c for c in columns if c in LABEL_COLUMNS]
        if len(texts) < low or (high is not None and len(texts) > high) or bool(labels) != needs_label:
            need = facts.shape
            which = repr(data_name) if set_name == "train" else f"{data_name!r} (train set {set_name!r})"
            raise PipelineError(
                f"loss {name} needs {need}; data {which} trains on {columns} "
                f"({data.key}.train_columns): pick a loss for that layout (cosent for scored pairs, mnrl for pairs "
                "or triplets, triplet for triplets) or another data config."
            )


def _check_early_stopping(spec: JobSpec) -> None:
    if spec.early_stopping is None:
        return
    if not spec.evaluators:
        raise PipelineError(
            "early_stopping.patience is set but evaluators=[]: the best model is picked by the dev evaluator's "
            "optimized_metric; pick an evaluator (evaluators=[sts], evaluators=[triplet]) or unset early_stopping.patience."
        )
    if not spec.evaluates_during_training:
        raise PipelineError(
            "early_stopping.patience is set but training.eval_strategy=no: set training.eval_strategy=steps "
            "training.eval_steps=N (evaluations to compare), or unset early_stopping.patience."
        )
    if not spec.optimized_metric:
        raise PipelineError(
            "early_stopping.patience is set but optimized_metric is null: the best model is picked by it; "
            "set optimized_metric to a dev metric (e.g. sts-dev_spearman_cosine)."
        )  # that it is a dev metric some evaluator logs: check_optimized_metric, above


def _check_guide(spec: JobSpec) -> None:
    if spec.loss.needs_guide and not spec.guide:
        raise PipelineError(
            f"loss {spec.loss.class_name} needs a guide model: set model@guide=minilm (or another option of conf/model/)."
        )


def _check_matryoshka(loss: LossSpec, model: DictConfig) -> None:
    """``loss.matryoshka_dims`` (declared: ``settings.LossOptions``) within the model's size where the config
    says it (``model.architecture.hidden_size``; otherwise checked once the model loads)."""
    if loss.matryoshka_dims is None:
        return
    dims = list(loss.matryoshka_dims)
    size = (model.get("architecture") or {}).get("hidden_size")
    if size and dims[0] > size:
        raise PipelineError(
            f"loss.matryoshka_dims={dims}: {dims[0]} is larger than the model's embedding dimension {size} "
            f"(model.architecture.hidden_size): use dimensions up to {size}."
        )


def check_optimized_metric(
    metric: str | None, specs: Sequence[EvaluatorSpec], dims: Sequence[int] | None = None
) -> None:
    """``optimized_metric`` must be a dev metric some evaluator logs (when any evaluator runs)."""
    if not specs or not metric:
        return
    available = [name for spec in specs for name in spec.logged_names("dev", dims)]
    if str(metric) not in available:
        raise PipelineError(
            f"optimized_metric={metric!r} is not logged by the evaluators {[spec.name for spec in specs]}: set "
            f"optimized_metric to one of {', '.join(available)}."
        )


def check_mine_layout(train_columns: list[str], data_name: str) -> None:
    """The mine stage's layout has an anchor and a positive (its options: ``settings.Mine``)."""
    if len(train_columns) != 2:
        raise PipelineError(
            f"the mine stage needs (anchor, positive) pairs; data {data_name!r} trains on {train_columns}: "
            "drop mine from stages, or pick a data config with two text columns."
        )

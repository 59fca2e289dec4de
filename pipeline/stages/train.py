"""The train stage: SentenceTransformerTrainer over the loaded model, loss and data.

Writes to MLflow (through the callbacks it is given, from ``pipeline.tracking``): training loss,
learning rate and grad norm every ``training.logging_steps``, and the dev evaluator's metrics
(``eval_`` prefix) every ``training.eval_steps``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.runtime import checkpoint, clipping
from pipeline.runtime.hardware import Machine
from pipeline.tracking.scrub import Secret, is_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    global_step: int
    training_loss: float
    runtime_s: float
    samples_per_second: float
    best_step: int | None = None  # the checkpoint ``metric_for_best_model`` picked (None: not tracked)
    best_metric: float | None = None
    best_checkpoint: str | None = None
    restore_errors: tuple[str, ...] = ()  # what the trainer logged when it could not load the best checkpoint


def train(
    model,
    loss,
    train_dataset,
    args,
    dev_evaluator=None,
    callbacks=(),
    eval_dataset=None,
    resume_from_checkpoint: str | None = None,
    loss_region=None,
) -> TrainResult:
    """Train ``model`` in place with ``loss`` on ``train_dataset`` under ``args``.

    ``train_dataset`` is a ``datasets.Dataset`` or a ``DatasetDict`` of named sets (batches then
    come from one set at a time, by ``args.multi_dataset_batch_sampler``). ``dev_evaluator`` runs
    every ``args.eval_steps``; ``eval_dataset`` (same layout as the train data) adds ``eval_loss``.
    ``resume_from_checkpoint`` continues from a ``checkpoint-N`` folder: weights, optimizer, scheduler,
    RNG states and the position in the data are restored by the trainer. ``loss_region`` (a context
    factory, :func:`pipeline.runtime.hardware.loss_region`) wraps every loss computation.
    """
    from sentence_transformers import SentenceTransformerTrainer

    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=loss,
        evaluator=dev_evaluator,
        callbacks=list(callbacks),
    )
    if loss_region is not None:  # the trainer enters what this returns around each compute_loss
        trainer.autocast_smart_context_manager = lambda cache_enabled=True: loss_region()
    clipping.skip_unit_clip(trainer)  # on a CPU: no multiplying every gradient by 1.0 (the same gradients)
    if args.disable_tqdm:  # not a terminal: one plain line per logging step, not a dict of floats
        from transformers.trainer_callback import PrinterCallback

        from pipeline.runtime.callbacks import ProgressLines

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressLines())
    with RestoreErrors() as restore_errors:
        output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics, best = output.metrics, trainer.state.best_model_checkpoint
    return TrainResult(
        global_step=output.global_step,
        training_loss=float(output.training_loss),
        runtime_s=float(metrics.get("train_runtime", 0.0)),
        samples_per_second=float(metrics.get("train_samples_per_second", 0.0)),
        best_step=int(best.rsplit("-", 1)[-1]) if best else None,
        best_metric=trainer.state.best_metric,
        best_checkpoint=best,
        restore_errors=tuple(restore_errors.messages),
    )


def check_trained(result: TrainResult, train_dataset, args) -> None:
    """A train stage that ran no step is an error, not a FINISHED run reporting the starting model as
    trained: the train rows (after mining) made no batch on any rank."""
    if result.global_step > 0:
        return
    sets = train_dataset.values() if isinstance(train_dataset, dict) else [train_dataset]
    raise PipelineError(
        f"training ran no step: {sum(len(s) for s in sets)} train rows on {args.world_size} rank(s) made no full "
        f"batch of training.per_device_train_batch_size={args.per_device_train_batch_size}: lower the batch size, "
        "or train on more rows."
    )


class BestModelNotRestored(PipelineError):
    """Training ended but the model is not the best checkpoint it was asked to restore."""


class RestoreErrors(logging.Handler):
    """Collects what sentence-transformers' trainer logs when it cannot load the best checkpoint: it
    catches that error itself and goes on with the last model."""

    LOGGER = "sentence_transformers.base.trainer"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "best model" in record.getMessage():
            self.messages.append(record.getMessage())

    def __enter__(self) -> RestoreErrors:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)


def check_restored(model, evaluator, result: TrainResult, metric: str) -> None:
    """After early stopping restored the best checkpoint (``load_best_model_at_end``): the model scores
    what that checkpoint scored (``result.best_metric``), ``evaluator`` re-run on dev as the trainer runs
    it; else :class:`BestModelNotRestored`, with the trainer's own error when it logged one."""
    from accelerate.utils import broadcast_object_list
    from sentence_transformers.util.distributed import distributed_evaluation

    if result.best_checkpoint is None or evaluator is None:
        return
    with distributed_evaluation(model) as runs_evaluator:  # several ranks: rank 0 scores, the others serve
        scores = evaluator(model) if runs_evaluator else {}
    value = broadcast_object_list([scores])[0].get(metric)
    if value is not None and math.isclose(value, result.best_metric, rel_tol=1e-5, abs_tol=1e-6):
        log.info("Best checkpoint %s restored: dev %s %.6f again", result.best_checkpoint, metric, value)
        return
    cause = f" (the trainer logged: {result.restore_errors[-1]})" if result.restore_errors else ""
    raise BestModelNotRestored(
        f"early stopping: the best checkpoint {result.best_checkpoint} ({metric} {result.best_metric:.6f}) was "
        f"not restored: the model scores {value} on dev{cause}. Keep the checkpoint (and a LoRA adapter's base "
        "model folder) in place until training ends, then run again."
    )


def warmup_alias(options: dict) -> None:
    """``warmup_ratio`` (the name model cards use) -> the float ``warmup_steps`` it means, with a notice."""
    ratio = options.pop("warmup_ratio", None)
    if ratio is None:
        return
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise PipelineError(f"training.warmup_ratio={ratio!r}: must be a fraction of the steps, 0 <= ratio < 1.")
    log.warning(
        "training.warmup_ratio=%s is read as training.warmup_steps=%s (a float < 1 is a ratio of the total steps)",
        ratio,
        float(ratio),
    )
    options["warmup_steps"] = float(ratio)


def best_model_options(options: dict, best_metric: str) -> dict:
    """Early stopping's trainer settings: a checkpoint at every evaluation (unless ``save_steps`` is
    set to a multiple of ``eval_steps`` already), the best one by ``best_metric`` restored at the end,
    and the stopping callback's patience counter restored on resume."""
    if str(options["save_strategy"]) == "no":
        options["save_strategy"] = options["eval_strategy"]
        options["save_steps"] = options.get("eval_steps")
    options["metric_for_best_model"] = f"eval_{best_metric}"
    options["load_best_model_at_end"] = True
    options["restore_callback_states_from_checkpoint"] = True
    return options


def training_arguments(
    training: DictConfig,
    machine: Machine,
    output_dir: Path,
    best_metric: str | None,
    early_stopping: bool = False,
    prompts: dict[str, str] | None = None,
):
    """SentenceTransformerTrainingArguments from ``training.*`` (names unchanged) and the resolved machine
    (its precision and the trainer options the profile decides).

    ``best_metric`` (the run's optimized metric, when an evaluator runs) picks the best checkpoint;
    with ``early_stopping`` that checkpoint is restored when training ends (:func:`best_model_options`).
    ``prompts`` (train column -> prompt) are prepended to the train (and ``eval_loss``) texts.
    The trainer's progress bar shows on a terminal; elsewhere (CI, files) one line per logging step.
    A secret (``hub_token``) is a :class:`~pipeline.tracking.scrub.Secret`: the trainer pushes with it,
    but the arguments it saves in every checkpoint (``training_args.bin``) hold ``***``.
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    options = OmegaConf.to_container(training, resolve=True)
    known = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PipelineError(
            f"training.{unknown[0]} is not a SentenceTransformerTrainingArguments field: fix the name "
            "(field names are used unchanged, e.g. training.learning_rate, training.warmup_steps)."
        )
    warmup_alias(options)
    checkpoint.training_options(options, best_metric)
    if early_stopping:
        best_model_options(options, best_metric)
    options.update(
        output_dir=str(output_dir / "trainer"),
        report_to="none",
        fp16=machine.precision.fp16,
        bf16=machine.precision.bf16,
        disable_tqdm=not sys.stderr.isatty(),
        prompts=prompts or None,
        **machine.trainer_options,
    )
    options = {k: Secret(v) if isinstance(v, str) and is_secret(k, v) else v for k, v in options.items()}
    try:
        return SentenceTransformerTrainingArguments(**options)
    except (ValueError, TypeError) as error:
        raise PipelineError(f"training: {error}") from None

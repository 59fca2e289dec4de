"""One job, top to bottom: preflight, the run, build, train, evaluate, log. The only code that sees the
whole config and owns the MLflow run.

Order matters and is the point of this module:
1. preflight: config checks (no data, no model), tracking target, data read and validated, training
   arguments built (unknown ``training.*`` names rejected): a mistake costs seconds and creates no run;
2. the MLflow run starts (rank 0 only: other ranks train and write nothing);
3. the model, guide, loss and evaluators load; train; evaluate; the model is logged; the run ends
   FINISHED (or FAILED / KILLED, never left RUNNING: ``pipeline.tracking.run``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline import PipelineError, tracking
from pipeline.runtime import checkpoint, guard, hardware, packing
from pipeline.runtime.hardware import Precision
from pipeline.stages import build, load, validate
from pipeline.stages.splits import LoadedData

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Resume:
    """Continue run ``run_id`` from ``checkpoint`` (see ``pipeline.resume``)."""

    run_id: str
    checkpoint: str
    fingerprint: str | None = None


@dataclasses.dataclass(frozen=True)
class JobResult:
    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    optimized_metric: float | None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What preflight checked and prepared: everything but the models."""

    data: LoadedData
    precision: Precision
    args: Any  # SentenceTransformerTrainingArguments, None without a train stage
    needs_guide: bool


@dataclasses.dataclass(frozen=True)
class Built:
    model: Any
    packer: packing.Packer | None
    evaluators: dict[str, Any]


def run_job(
    cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None, run_name: str | None = None, resume: Resume | None = None,
    on_run_start: Callable[[str], None] | None = None,
) -> JobResult:  # fmt: skip
    """Run the stages of one composed config into one MLflow run.

    ``extra_tags`` / ``run_name`` come from a sweep (parent run id, swept values) or a rerun;
    ``resume`` continues an existing run from its last checkpoint; ``on_run_start`` hears the run id
    as soon as the run exists (a launcher waiting on rank 0).
    """
    started = time.perf_counter()
    plan = preflight(cfg, output_dir, resume)
    main_rank = hardware.process_rank() == 0  # rank 0 owns the run; other ranks train and write nothing
    opened = (
        open_run(cfg, plan, choices or {}, overrides, extra_tags, run_name, resume)
        if main_rank
        else contextlib.nullcontext()
    )
    with opened as run:
        if run is not None:
            (on_run_start or (lambda _: None))(run.info.run_id)
            tracking.log_data_lineage(plan.data, cfg.data.name, (cfg.get("eval_data") or cfg.data).name)
        built = build_stage(cfg, plan)
        if "train" in cfg.stages:
            train_stage(cfg, plan, built, resume)
        if run is None:
            return JobResult("", "", {}, None)
        metrics = evaluate_stage(cfg, plan, built, output_dir)
        log_outcome(cfg, built, output_dir, started)
    target = metrics.get(str(cfg.optimized_metric)) if cfg.get("optimized_metric") else None
    return JobResult(run.info.run_id, run.info.experiment_id, metrics, target)


def preflight(cfg: DictConfig, output_dir: Path, resume: Resume | None) -> Plan:
    """Every check that needs no model: config, tracking target, data, training arguments."""
    from pipeline.stages.train import training_arguments

    validate.check_config(cfg)
    tracking.check_target(cfg.tracking)
    data = load.load_data(cfg)
    log.info("Data: %s", ", ".join(f"{n} {len(s.dataset)} rows from {s.source}" for n, s in data.all_splits()))
    if resume and resume.fingerprint and resume.fingerprint != data.fingerprint:
        raise PipelineError(
            f"the data changed since run {resume.run_id} started (fingerprint {data.fingerprint} != {resume.fingerprint}): "
            "restore it, or start a new run."
        )
    precision = hardware.resolve_precision(cfg.hardware, cfg.training)
    training = "train" in cfg.stages
    best_metric = cfg.get("optimized_metric") if cfg.evaluator.get("_target_") else None
    stops_early, prompts = validate.early_stopping_on(cfg), validate.column_prompts(cfg.data)
    args = (
        training_arguments(cfg.training, cfg.hardware, output_dir, precision, best_metric, stops_early, prompts)
        if training
        else None
    )
    needs_guide = training and build.loss_takes_guide(cfg.loss)
    if needs_guide and not cfg.get("guide"):
        loss_name = cfg.loss._target_.rsplit(".", 1)[-1]
        raise PipelineError(f"loss {loss_name} needs a guide model: set guide=minilm (or another model option).")
    return Plan(data, precision, args, needs_guide)


def open_run(
    cfg: DictConfig, plan: Plan, choices: dict[str, str], overrides: list[str],
    extra_tags: dict[str, str] | None, run_name: str | None, resume: Resume | None,
):  # fmt: skip
    """The job's MLflow run (a context manager), tagged with what it needs to be replayed."""
    tags = {
        "pipeline.experiment": choices.get("experiment") or "none",
        "data.fingerprint": plan.data.fingerprint,
        **hardware.world_tags(cfg.training),
        **({"checkpoint.dir": str(Path(plan.args.output_dir).resolve())} if plan.args else {}),
        "precision.intended": plan.precision.intended,
        "precision.effective": plan.precision.effective,
        **(extra_tags or {}),
    }
    name = cfg.tracking.run_name or run_name or " ".join([cfg.name, *overrides])
    experiment_id = tracking.open_experiment(cfg.tracking)
    return tracking.job_run(cfg, experiment_id, name, overrides, tags, run_id=resume.run_id if resume else None)


def build_stage(cfg: DictConfig, plan: Plan) -> Built:
    """The model (packed where exact) and one evaluator per evaluation split."""
    hardware.configure_threads(cfg.hardware)
    model = build.load_model(cfg.model, cfg.seed)
    dims = cfg.loss.get("matryoshka_dims")
    build.check_matryoshka_dims(dims, model)
    if lora_on(cfg):
        counts = build.add_lora(model, cfg.model.peft)
        log.info(
            "LoRA adapter: %d of %d parameters train",
            counts["peft_trainable_parameters"],
            counts["peft_total_parameters"],
        )
        tracking.log_metrics(counts)
    packer = packing.enable(model, cfg.hardware)
    batch = hardware.eval_batch_size(cfg.hardware, cfg.training)
    evaluators = {
        name: build.build_evaluator(cfg.evaluator, name, split, batch) for name, split in plan.data.eval_splits.items()
    }
    model.prompts.update(validate.column_prompts(cfg.data))  # saved with the model: encode(prompt_name=COLUMN)
    prompts = validate.evaluator_prompts(cfg.data, cfg.evaluator)
    return Built(model, packer, build.adjust_evaluators(evaluators, dims, prompts))


def lora_on(cfg: DictConfig) -> bool:
    """Whether ``model.peft.r`` asks for a LoRA adapter."""
    return (cfg.model.get("peft") or {}).get("r") is not None


def train_stage(cfg: DictConfig, plan: Plan, built: Built, resume: Resume | None) -> None:
    """Train the model in place; a guard trip or a signal ends the job here (FAILED / KILLED)."""
    from pipeline.runtime import callbacks
    from pipeline.stages.train import train

    guide = build.load_model(cfg.guide, cfg.seed, key="guide") if plan.needs_guide else None
    packing.enable(guide, cfg.hardware, tag="packing.guide")
    loss = build.build_loss(cfg.loss, built.model, guide)
    dev = built.evaluators.get("dev") if str(cfg.training.eval_strategy) != "no" else None
    columns, batch = list(cfg.data.train_columns), int(cfg.training.per_device_train_batch_size)
    chance = None if cfg.data.get("train_sets") else guard.chance_loss(cfg.loss, columns, batch)
    settings = guard.GuardSettings.from_config(cfg.get("guard"))
    watch = callbacks.TrainingGuard(settings, built.model, chance) if settings else None
    checkpoints = callbacks.Checkpoints()
    hooks = [callbacks.MLflowMetrics(), callbacks.StartupTime(), checkpoints, *([watch] if watch else [])]
    if validate.early_stopping_on(cfg):
        from transformers import EarlyStoppingCallback

        hooks.append(EarlyStoppingCallback(cfg.early_stopping.patience, cfg.early_stopping.threshold))
    with checkpoint.training():
        result = train(built.model, loss, plan.data.train_dataset, plan.args, dev_evaluator=dev, callbacks=hooks,
                       eval_dataset=plan.data.eval_loss_dataset, resume_from_checkpoint=resume.checkpoint if resume else None)  # fmt: skip
    guard.raise_if_tripped(watch)
    checkpoint.raise_if_stopped(checkpoints)
    log.info("Trained %d steps in %.1f s (final loss %.4f)", result.global_step, result.runtime_s, result.training_loss)
    if validate.early_stopping_on(cfg) and result.best_step is not None:
        log.info("Best model: step %d (%s %.4f), restored", result.best_step, cfg.optimized_metric, result.best_metric)
        tracking.log_metrics({"best_step": result.best_step, f"best_{cfg.optimized_metric}": result.best_metric})


def evaluate_stage(cfg: DictConfig, plan: Plan, built: Built, output_dir: Path) -> dict[str, float]:
    """Score the model on the evaluator's splits, in the profile's precision; log metrics and files."""
    from pipeline.stages.evaluate import evaluate

    if "evaluate" not in cfg.stages or not built.evaluators:
        return {}
    scored = {name: built.evaluators[name] for name in cfg.evaluator.splits if name in built.evaluators}
    with hardware.autocast(plan.precision, built.model.device.type):  # as in training
        outcome = evaluate(built.model, scored, output_dir / "eval")
    tracking.log_metrics(outcome.metrics)
    tracking.log_files(outcome.files, "eval")
    return outcome.metrics


def log_outcome(cfg: DictConfig, built: Built, output_dir: Path, started: float) -> None:
    """The trained model, the job's seconds and the packer's token counts."""
    if "train" in cfg.stages and cfg.tracking.log_model:
        if lora_on(cfg):  # the adapter alone, then the model with it merged in (loads without peft)
            built.model.transformers_model.save_pretrained(str(output_dir / "adapter"))
            tracking.log_files(sorted((output_dir / "adapter").iterdir()), "adapter")
            build.merge_lora(built.model)
        tracking.log_model(built.model, output_dir / "model")
    tracking.log_metrics({"job_seconds": time.perf_counter() - started, **packing.token_metrics(built.packer)})

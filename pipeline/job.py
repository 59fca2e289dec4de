"""One job, top to bottom: check, load, train, evaluate, log. The only code that sees the whole config.

Order matters and is the point of this module:
1. config checks (no data, no model), tracking target check, data read + validated: a mistake
   costs seconds and creates no MLflow run;
2. the training arguments are built (unknown ``training.*`` names rejected) before any model loads;
3. the MLflow run starts; the model, guide, loss and evaluators load; train; evaluate; the model
   is logged; the run ends FINISHED (or FAILED / KILLED, never left RUNNING).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError, checkpoint, guard, hardware, load, packing, tracking, validate
from pipeline.hardware import configure_threads, resolve_precision

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


def run_job(
    cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None, run_name: str | None = None, resume: Resume | None = None,
) -> JobResult:
    """Run the stages of one composed config into one MLflow run.

    ``extra_tags`` / ``run_name`` come from a sweep (parent run id, swept values) or a rerun;
    ``resume`` continues an existing run from its last checkpoint.
    """
    started = time.perf_counter()
    choices = choices or {}

    # -- checks that need no model ------------------------------------------------------------
    validate.check_config(cfg)
    tracking.check_target(cfg.tracking)
    data = load.load_data(cfg)
    log.info("Data: %s", ", ".join(f"{n} {len(s.dataset)} rows from {s.source}" for n, s in _splits(data)))
    if resume and resume.fingerprint and resume.fingerprint != data.fingerprint:
        raise PipelineError(f"the data changed since run {resume.run_id} started (fingerprint {data.fingerprint} != {resume.fingerprint}): restore it, or start a new run.")
    precision = resolve_precision(cfg.hardware, cfg.training)
    args = _training_args(cfg, output_dir, precision) if "train" in cfg.stages else None
    needs_guide = "train" in cfg.stages and load.loss_takes_guide(cfg.loss)
    if needs_guide and not cfg.get("guide"):
        raise PipelineError(f"loss {cfg.loss._target_.rsplit('.', 1)[-1]} needs a guide model: set guide=minilm (or another model option).")

    # -- the run (rank 0 only, when several processes run the job: pipeline.launch) -------------
    main_rank = hardware.process_rank() == 0
    experiment_id = tracking.open_experiment(cfg.tracking) if main_rank else ""
    tags = {
        "pipeline.experiment": choices.get("experiment") or "none",
        "data.fingerprint": data.fingerprint,
        **hardware.world_tags(cfg.training),
        **({"checkpoint.dir": str(Path(args.output_dir).resolve())} if args else {}),
        "precision.intended": precision.intended,
        "precision.effective": precision.effective,
        **(extra_tags or {}),
    }
    run_name = cfg.tracking.run_name or run_name or " ".join([cfg.name, *overrides])[:250]
    run_id = resume.run_id if resume else None
    run_context = tracking.job_run(cfg, experiment_id, run_name, overrides, tags, run_id=run_id) if main_rank else contextlib.nullcontext()
    with run_context as run:
        if main_rank:
            from pipeline.launch import announce_run

            announce_run(run.info.run_id)
            tracking.log_data_lineage(data, cfg.data.name, (cfg.get("eval_data") or cfg.data).name)
        configure_threads(cfg.hardware)
        model = load.load_model(cfg.model, cfg.seed)
        packer = packing.enable(model, cfg.hardware)
        evaluator_batch = hardware.eval_batch_size(cfg.hardware, cfg.training)
        evaluators = {
            name: load.build_evaluator(cfg.evaluator, name, split, evaluator_batch) for name, split in data.eval_splits.items()
        }
        metrics: dict[str, float] = {}
        if "train" in cfg.stages:
            from pipeline.train import train

            guide = load.load_model(cfg.guide, cfg.seed, key="guide") if needs_guide else None
            packing.enable(guide, cfg.hardware, tag="packing.guide")
            loss = load.build_loss(cfg.loss, model, guide)
            dev = evaluators.get("dev") if str(cfg.training.eval_strategy) != "no" else None
            chance = None if cfg.data.get("train_sets") else guard.chance_loss(
                cfg.loss, list(cfg.data.train_columns), int(cfg.training.per_device_train_batch_size))
            watch, checkpoints = guard.make_guard(cfg.get("guard"), model, chance), checkpoint.make_callback()
            callbacks = [tracking.metrics_callback(), hardware.startup_callback(), checkpoints, *([watch] if watch else [])]
            with checkpoint.training():
                result = train(model, loss, data.train_dataset, args, dev_evaluator=dev, callbacks=callbacks,
                               eval_dataset=data.eval_loss_dataset, resume_from_checkpoint=resume.checkpoint if resume else None)
            guard.raise_if_tripped(watch)
            checkpoint.raise_if_stopped(checkpoints)
            log.info("Trained %d steps in %.1f s (final loss %.4f)", result.global_step, result.runtime_s, result.training_loss)
        if not main_rank:
            return JobResult("", "", {}, None)
        if "evaluate" in cfg.stages and evaluators:
            import mlflow

            from pipeline.evaluate import evaluate

            scored = {name: evaluators[name] for name in cfg.evaluator.splits if name in evaluators}
            with hardware.autocast(precision, model.device.type):  # the profile's precision, as in training
                outcome = evaluate(model, scored, output_dir / "eval")
            metrics = outcome.metrics
            mlflow.log_metrics(metrics)
            for path in outcome.files:
                mlflow.log_artifact(str(path), "eval")
        if "train" in cfg.stages and cfg.tracking.log_model:
            tracking.log_model(model, output_dir / "model")
        import mlflow

        mlflow.log_metric("job_seconds", time.perf_counter() - started)
        packing.log_metrics(packer)
    target = metrics.get(str(cfg.optimized_metric)) if cfg.get("optimized_metric") else None
    return JobResult(run.info.run_id, experiment_id, metrics, target)


def _splits(data: load.LoadedData):
    yield from data.train_splits.items()
    yield from data.eval_splits.items()


def _training_args(cfg: DictConfig, output_dir: Path, precision):
    """SentenceTransformerTrainingArguments from ``training.*`` (names unchanged) + the profile."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    options = OmegaConf.to_container(cfg.training, resolve=True)
    known = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PipelineError(
            f"training.{unknown[0]} is not a SentenceTransformerTrainingArguments field: fix the name "
            "(field names are used unchanged, e.g. training.learning_rate, training.warmup_steps)."
        )
    checkpoint.training_options(options, cfg.get("optimized_metric") if cfg.evaluator.get("_target_") else None)
    options.update(
        output_dir=str(output_dir / "trainer"),
        report_to="none",
        fp16=precision.fp16,
        bf16=precision.bf16,
        disable_tqdm=True,
        **hardware.trainer_options(cfg.hardware, cfg.training),
    )
    try:
        return SentenceTransformerTrainingArguments(**options)
    except (ValueError, TypeError) as error:
        raise PipelineError(f"training: {error}") from None

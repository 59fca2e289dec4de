"""One job, top to bottom: preflight, the run, build, train, evaluate, log. The only code that sees the
whole config and owns the MLflow run.

Order matters and is the point of this module:
1. preflight: config checks (no data, no model), tracking target, data read and validated, training
   arguments built (unknown ``training.*`` names rejected): a mistake costs seconds and creates no run;
2. the MLflow run starts (rank 0 only: other ranks train and write nothing);
3. the model and evaluators load; hard negatives are mined (``mine`` stage); the evaluators score the
   starting model (``baseline/`` metrics, or a finished run's with the same key); train; evaluate; the
   model is logged; the run ends FINISHED (or FAILED / KILLED, never left RUNNING: ``pipeline.tracking.run``).
"""

from __future__ import annotations

import contextlib
import copy
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
from pipeline.stages import build, load, mine, validate
from pipeline.stages.baseline import Scoring, baseline_key
from pipeline.stages.evaluators import eval_splits, evaluator_specs, splits_needed
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
    data_reused: bool = False  # read and checked by an earlier job of this process
    started: float = 0.0  # time.perf_counter() when the job started


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
        folder = job_folder(output_dir, run.info.run_id if run is not None else shared_run_id(cfg, resume), resume)
        plan = in_folder(plan, folder)
        built = build_stage(cfg, plan)
        if "mine" in cfg.stages:
            plan = mine_stage(cfg, plan, built)
        baseline = baseline_step(cfg, plan, built, folder) if run is not None and not resume else {}
        if "train" in cfg.stages:
            train_stage(cfg, plan, built, resume)
        if run is None:
            return JobResult("", "", {}, None)
        metrics = {**baseline, **evaluate_stage(cfg, plan, built, folder)}
        log_outcome(cfg, built, folder, started, metrics)
    target = metrics.get(tracking.metric_name(str(cfg.optimized_metric))) if cfg.get("optimized_metric") else None
    return JobResult(run.info.run_id, run.info.experiment_id, metrics, target)


def job_folder(output_dir: Path, run_id: str, resume: Resume | None) -> Path:
    """The job's own folder (trainer output, checkpoints, evaluation files): ``<output_dir>/<run id>``,
    so jobs that share an output folder (started in the same second, or given the same
    ``hydra.run.dir``) never write into each other's; a resumed run keeps the folder of its checkpoints."""
    return Path(resume.checkpoint).parent.parent if resume else output_dir / run_id


def shared_run_id(cfg: DictConfig, resume: Resume | None) -> str:
    """A rank other than 0: the run it trains for, as rank 0 announced it (or the resumed run)."""
    from pipeline.runtime import launch

    return resume.run_id if resume else launch.announced_run(cfg.hardware)


def in_folder(plan: Plan, folder: Path) -> Plan:
    """The plan with the trainer writing to ``folder/trainer``, the folder the run's ``checkpoint.dir`` tag names."""
    if plan.args is None:
        return plan
    args = copy.copy(plan.args)
    args.output_dir = str(folder / "trainer")
    tracking.set_tags({"checkpoint.dir": str(Path(args.output_dir).resolve())})  # rank 0: the run's tag
    return dataclasses.replace(plan, args=args)


def preflight(cfg: DictConfig, output_dir: Path, resume: Resume | None) -> Plan:
    """Every check that needs no model: config, tracking target, data, training arguments."""
    from pipeline.stages.train import training_arguments

    started = time.perf_counter()

    validate.check_config(cfg)
    tracking.check_target(cfg.tracking)
    if cfg.tracking.get("register_as"):
        if not (cfg.tracking.log_model and "train" in cfg.stages):
            raise PipelineError(
                "tracking.register_as registers the trained model: it needs tracking.log_model=true and a train stage."
            )
        tracking.check_registry(str(cfg.tracking.uri), str(cfg.tracking.register_as))
    data, data_reused = load.shared_data(cfg)
    log.info("Data: %s", ", ".join(f"{n} {len(s.dataset)} rows from {s.source}" for n, s in data.all_splits()))
    if resume and resume.fingerprint and resume.fingerprint != data.fingerprint:
        raise PipelineError(
            f"the data changed since run {resume.run_id} started (fingerprint {data.fingerprint} != {resume.fingerprint}): "
            "restore it, or start a new run."
        )
    precision = hardware.resolve_precision(cfg.hardware, cfg.training)
    training = "train" in cfg.stages
    best_metric = cfg.get("optimized_metric") if evaluator_specs(cfg) else None
    stops_early, prompts = validate.early_stopping_on(cfg), validate.column_prompts(cfg.data)
    if "mine" in cfg.stages:
        prompts = mine.training_prompts(prompts, list(cfg.data.train_columns))
    args = (
        training_arguments(cfg.training, cfg.hardware, output_dir, precision, best_metric, stops_early, prompts)
        if training
        else None
    )
    needs_guide = training and build.loss_takes_guide(cfg.loss)
    if needs_guide and not cfg.get("guide"):
        loss_name = cfg.loss._target_.rsplit(".", 1)[-1]
        raise PipelineError(f"loss {loss_name} needs a guide model: set guide=minilm (or another model option).")
    return Plan(data, precision, args, needs_guide, data_reused, started)


def open_run(
    cfg: DictConfig, plan: Plan, choices: dict[str, str], overrides: list[str],
    extra_tags: dict[str, str] | None, run_name: str | None, resume: Resume | None,
):  # fmt: skip
    """The job's MLflow run (a context manager), tagged with what it needs to be replayed."""
    tags = {
        "pipeline.experiment": choices.get("experiment") or "none",
        "data.fingerprint": plan.data.fingerprint,
        **hardware.world_tags(cfg.training),
        **hardware.owner_tags(),
        "precision.intended": plan.precision.intended,
        "precision.effective": plan.precision.effective,
        "load.cache.data": "hit" if plan.data_reused else "miss",
        **(extra_tags or {}),
    }
    given = cfg.tracking.run_name if cfg.tracking.run_name not in (None, "") else run_name
    name = str(given) if given is not None else " ".join([str(cfg.name), *overrides])  # run_name=1.5, name=2024
    experiment_id = tracking.open_experiment(cfg.tracking)
    return tracking.job_run(cfg, experiment_id, name, overrides, tags, run_id=resume.run_id if resume else None)


def build_stage(cfg: DictConfig, plan: Plan) -> Built:
    """The model (packed where exact) and every evaluator on every split it scores (``{name}-{split}``)."""
    hardware.configure_threads(cfg.hardware)
    model, reused = build.shared_model(cfg.model, cfg.seed)
    model = model.to(hardware.device(cfg.hardware))  # evaluate-only runs too
    tracking.set_tags({"load.cache.model": "hit" if reused else "miss"})
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
    specs = evaluator_specs(cfg)
    evaluators = build.build_evaluators(
        specs, splits_needed(cfg, specs), plan.data.eval_splits, batch, plan.data.corpora
    )
    model.prompts.update(validate.column_prompts(cfg.data))  # saved with the model: encode(prompt_name=COLUMN)
    prompts = {name: validate.evaluator_prompts(cfg.data, spec) for name, spec in specs.items()}
    return Built(model, packer, build.adjust_evaluators(evaluators, dims, prompts))


def lora_on(cfg: DictConfig) -> bool:
    """Whether ``model.peft.r`` asks for a LoRA adapter."""
    return (cfg.model.get("peft") or {}).get("r") is not None


def mine_stage(cfg: DictConfig, plan: Plan, built: Built) -> Plan:
    """Hard negatives for the train pairs (``stages=[load,mine,train,...]``): the mined set, logged as a
    training dataset input, replaces the train split. With several ranks, each machine's main rank mines
    (or finds the set in the cache) while the others wait, then they read its set from the cache."""
    from accelerate import PartialState

    train, inputs = plan.data.train_splits["train"], mine_inputs(cfg, plan.data)

    def load_miner():
        return build.shared_model(cfg.miner, cfg.seed, key="miner")[0] if cfg.get("miner") else built.model

    ranks = PartialState()
    with ranks.local_main_process_first():
        mined = mine.mine(train, load_miner, cfg.mine, plan.data.candidates, inputs, ranks.is_local_main_process)
    tracking.log_mined_set(mined.split.dataset, mined.split.source, f"{cfg.data.name}-mined", mined.cached)
    return dataclasses.replace(plan, data=dataclasses.replace(plan.data, train=mined.split))


def mine_inputs(cfg: DictConfig, data: LoadedData) -> dict:
    """What this job's mined set depends on (its cache key): train rows, candidates, miner, options, prompts."""
    train = data.train_splits["train"]
    prompts = mine.prompts_for(train, validate.column_prompts(cfg.data))
    return mine.key_inputs(train, data.candidates, cfg.get("miner") or cfg.model, cfg.seed, cfg.mine, prompts)


def final_evaluators(cfg: DictConfig, built: Built) -> dict[str, Any]:
    """The evaluators the evaluate stage (and the baseline) run: each evaluator on its own ``splits``."""
    specs = evaluator_specs(cfg)
    wanted = [f"{name}-{split}" for split in eval_splits(specs) for name, spec in specs.items() if split in spec.splits]
    return {name: built.evaluators[name] for name in wanted if name in built.evaluators}


def dev_evaluator(built: Built):
    """What the trainer runs on the dev split: the one dev evaluator, or all of them in sequence
    (ranked by the first one's primary metric; each metric keeps its evaluator's prefix)."""
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

    dev = [evaluator for name, evaluator in built.evaluators.items() if name.endswith("-dev")]
    if len(dev) <= 1:
        return dev[0] if dev else None
    return SequentialEvaluator(dev, main_score_function=lambda scores: scores[0])


def baseline_step(cfg: DictConfig, plan: Plan, built: Built, output_dir: Path) -> dict[str, float]:
    """The starting model scored by the final evaluators, before training: ``baseline/`` metrics, copied
    from a finished run of the store with the same key when there is one and ``baseline_reuse`` allows
    (``pipeline.tracking.baseline``)."""
    from pipeline.stages.evaluate import evaluate

    scored = final_evaluators(cfg, built)
    if not cfg.get("baseline") or "train" not in cfg.stages or "evaluate" not in cfg.stages or not scored:
        return {}
    key = baseline_key(built.model, baseline_scoring(cfg, plan, built, list(scored)))
    cached = tracking.find_baseline(key) if cfg.baseline_reuse else None
    if cached is not None:
        log.info("Baseline: reused from run %s (same model, data, evaluators and precision)", cached.source)
        tracking.record_baseline(key, cached.metrics, cached.source)
        return cached.metrics
    with hardware.autocast(plan.precision, built.model.device.type), packing.uncounted(built.packer):
        outcome = evaluate(built.model, scored, output_dir / "baseline")
    metrics = {f"baseline/{name}": value for name, value in outcome.metrics.items()}
    tracking.record_baseline(key, metrics)
    return metrics


def baseline_scoring(cfg: DictConfig, plan: Plan, built: Built, scored: list[str]) -> Scoring:
    """What besides the model decides the baseline's numbers (its cache key)."""
    specs = evaluator_specs(cfg)
    return Scoring(
        evaluators=specs,
        scored=scored,
        splits=plan.data.eval_splits,
        corpora=plan.data.corpora,
        prompts={name: validate.evaluator_prompts(cfg.data, spec) for name, spec in specs.items()},
        matryoshka_dims=list(cfg.loss.get("matryoshka_dims") or []),
        batch_size=hardware.eval_batch_size(cfg.hardware, cfg.training),
        precision=plan.precision.effective,
        packing_row_length=built.packer.row_length if built.packer else None,
    )


def train_stage(cfg: DictConfig, plan: Plan, built: Built, resume: Resume | None) -> None:
    """Train the model in place; a guard trip or a signal ends the job here (FAILED / KILLED)."""
    from pipeline.runtime import callbacks
    from pipeline.stages.train import check_restored, train

    guide = build.shared_model(cfg.guide, cfg.seed, key="guide")[0].to(built.model.device) if plan.needs_guide else None
    packing.enable(guide, cfg.hardware, tag="packing.guide")
    loss = build.build_loss(cfg.loss, built.model, guide)
    dev = dev_evaluator(built) if str(cfg.training.eval_strategy) != "no" else None
    batch = int(cfg.training.per_device_train_batch_size)
    columns = list(plan.data.train_dataset.column_names) if not cfg.data.get("train_sets") else []
    chance = None if cfg.data.get("train_sets") else guard.chance_loss(cfg.loss, columns, batch)
    settings = guard.GuardSettings.from_config(cfg.get("guard"))
    watch = callbacks.TrainingGuard(settings, built.model, chance) if settings else None
    checkpoints = callbacks.Checkpoints()
    hooks = [callbacks.MLflowMetrics(), callbacks.StartupTime(plan.started), checkpoints, *([watch] if watch else [])]
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
        check_restored(built.model, dev, result, str(cfg.optimized_metric))
        log.info(
            "Best model: step %d (%s %.4f), restored and checked",
            result.best_step,
            cfg.optimized_metric,
            result.best_metric,
        )
        tracking.log_metrics({"best_step": result.best_step, f"best_{cfg.optimized_metric}": result.best_metric})


def evaluate_stage(cfg: DictConfig, plan: Plan, built: Built, output_dir: Path) -> dict[str, float]:
    """Score the model on the evaluator's splits, in the profile's precision; log metrics and files."""
    from pipeline.stages.evaluate import NonFiniteMetricError, evaluate

    if "evaluate" not in cfg.stages:
        return {}
    scored = final_evaluators(cfg, built)
    try:
        with hardware.autocast(plan.precision, built.model.device.type):  # as in training
            outcome = evaluate(built.model, scored, output_dir / "eval")
    except NonFiniteMetricError:  # the run ends FAILED, but what trained is kept
        log.warning("A final metric is not finite: the trained model is logged before the run ends FAILED")
        log_trained_model(cfg, built, output_dir)
        raise
    tracking.log_metrics(outcome.metrics)
    tracking.log_files(outcome.files, "eval")
    return outcome.metrics


def log_trained_model(cfg: DictConfig, built: Built, output_dir: Path) -> str | None:
    """The trained model, logged (``tracking.log_model``); its ``models:/`` URI, None when not logged."""
    if "train" in cfg.stages and cfg.tracking.log_model:
        if lora_on(cfg):  # the adapter alone, then the model with it merged in (loads without peft)
            built.model.transformers_model.save_pretrained(str(output_dir / "adapter"))
            tracking.log_files(sorted((output_dir / "adapter").iterdir()), "adapter")
            build.merge_lora(built.model, output_dir / "adapter")
        return tracking.log_model(built.model)
    return None


def log_outcome(cfg: DictConfig, built: Built, output_dir: Path, started: float, metrics: dict[str, float]) -> None:
    """The trained model (a new registry version with ``tracking.register_as``), the job's seconds
    and the packer's token counts."""
    model_uri = log_trained_model(cfg, built, output_dir)
    if model_uri and cfg.tracking.get("register_as"):
        name = str(cfg.tracking.register_as)
        version = tracking.register_model(model_uri, name, tracking.config_params(cfg), metrics)
        log.info("Registered %s version %s", name, version)
    tracking.log_metrics({"job_seconds": time.perf_counter() - started, **packing.token_metrics(built.packer)})

"""One job, top to bottom: preflight, the run, build, train, evaluate, log. The only code that sees the
whole config and owns the MLflow run.

Order matters and is the point of this module:
1. preflight: config checks (no data, no model), the hardware profile resolved once (``hardware.Machine``),
   tracking target, data read, validated and audited for evaluation rows that duplicate train rows
   (``data.leakage``: ``fail`` and ``drop`` here; ``warn`` in a thread beside the run's opening, the model
   load, the baseline and training, logged at the first step's end after it is done), training arguments built (unknown ``training.*``
   names rejected): a mistake costs seconds and creates no run;
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
from pipeline.runtime import allocator, checkpoint, collector, guard, hardware, packing, process_clock
from pipeline.runtime.hardware import Machine
from pipeline.stages import build, leakage, load, mine, validate
from pipeline.stages.baseline import Scoring, baseline_key
from pipeline.stages.build import Built
from pipeline.stages.spec import JobSpec, read_spec
from pipeline.stages.splits import LoadedData

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Resume:
    """Continue run ``run_id`` from ``checkpoint`` (see ``pipeline.resume``)."""

    run_id: str
    checkpoint: str
    fingerprint: str | None = None


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """How a command asks for a job, besides its config: what ``start_job``, the launcher and every rank pass on."""

    overrides: list[str] = dataclasses.field(default_factory=list)  # as typed: the run's name and overrides.yaml
    choices: dict[str, str] = dataclasses.field(default_factory=dict)  # Hydra's group choices (``experiment``)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)  # a sweep's parent and job, a rerun's source
    run_name: str | None = None  # else tracking.run_name, else the job's name and overrides
    resume: Resume | None = None  # continue this run from its last checkpoint

    def as_dict(self) -> dict:
        """Plain data, for the ranks of a launched job (``pipeline.runtime.launch``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> JobRequest:
        resume = data.get("resume")
        return cls(
            overrides=[str(o) for o in data.get("overrides") or []],
            choices={str(k): str(v) for k, v in (data.get("choices") or {}).items()},
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
            run_name=data.get("run_name"),
            resume=Resume(**resume) if resume else None,
        )


@dataclasses.dataclass(frozen=True)
class JobResult:
    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    optimized_metric: float | None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What preflight checked and prepared: everything but the models."""

    spec: JobSpec  # the config, read once
    data: LoadedData
    machine: Machine  # the hardware profile, resolved once
    args: Any  # SentenceTransformerTrainingArguments, None without a train stage
    data_reused: bool = False  # read and checked by an earlier job of this process
    started: float = 0.0  # time.perf_counter() when the job started


def run_job(
    cfg: DictConfig, output_dir: Path, request: JobRequest, on_run_start: Callable[[str], None] | None = None
) -> JobResult:
    """Run the stages of one composed config into one MLflow run.

    ``request.tags`` / ``.run_name`` come from a sweep (parent run id, swept values) or a rerun;
    ``request.resume`` continues an existing run from its last checkpoint; ``on_run_start`` hears the
    run id as soon as the run exists (a launcher waiting on rank 0).
    """
    resume = request.resume
    cfg = resolved(cfg)
    plan = preflight(cfg, output_dir, resume)
    spec = plan.spec
    main_rank = hardware.process_rank() == 0  # rank 0 owns the run; other ranks train and write nothing
    opened = open_run(cfg, plan, request) if main_rank else contextlib.nullcontext()
    with opened as run:
        if run is not None:
            (on_run_start or (lambda _: None))(run.info.run_id)
            tracking.log_data_lineage(plan.data, spec.data.name, spec.eval_data.name)
        folder = job_folder(output_dir, run.info.run_id if run is not None else shared_run_id(spec, resume), resume)
        plan = in_folder(plan, folder)
        built = build_stage(plan)
        collector.settle()  # start-up is over: what it made is kept out of the collector's scans
        if spec.stages.mine:
            plan = mine_stage(plan, built)
        baseline = baseline_step(plan, built, folder) if run is not None and not resume else {}
        leaks = LeakageReport(plan.data.leakage, run is not None)
        if spec.stages.train:
            train_stage(plan, built, resume, leaks)  # warn: logged at the first step's end after its thread is done
        leaks()  # ... or here, once it is done
        if run is None:
            return JobResult("", "", {}, None)
        metrics = {**baseline, **evaluate_stage(plan, built, folder)}
        log_outcome(cfg, spec, built, folder, plan.started, metrics)
    target = metrics.get(tracking.metric_name(spec.optimized_metric)) if spec.optimized_metric else None
    return JobResult(run.info.run_id, run.info.experiment_id, metrics, target)


def resolved(cfg: DictConfig) -> DictConfig:
    """A copy of the config with every interpolation resolved, once: what the spec reads, the run logs and
    the cache keys hold, each seeing the same values (``optimized_metric``'s default, ``${first_dev_metric:...}``,
    runs an evaluator class on two rows each time it resolves)."""
    from omegaconf import OmegaConf

    copied = copy.deepcopy(cfg)
    OmegaConf.resolve(copied)
    return copied


def job_folder(output_dir: Path, run_id: str, resume: Resume | None) -> Path:
    """The job's own folder (trainer output, checkpoints, evaluation files): ``<output_dir>/<run id>``,
    so jobs that share an output folder (started in the same second, or given the same
    ``hydra.run.dir``) never write into each other's; a resumed run keeps the folder of its checkpoints."""
    return Path(resume.checkpoint).parent.parent if resume else output_dir / run_id


def shared_run_id(spec: JobSpec, resume: Resume | None) -> str:
    """A rank other than 0: the run it trains for, as rank 0 announced it (or the resumed run)."""
    from pipeline.runtime import launch

    return resume.run_id if resume else launch.announced_run(spec.hardware)


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
    spec = read_spec(cfg)  # the only reading of the config: stages below take their part of the spec
    validate.check_config(spec)
    machine = hardware.resolve_machine(spec.hardware, spec.training)  # the profile, resolved once
    hardware.configure_threads(machine)
    allocator.keep_freed_blocks()  # large blocks reused step after step, not mapped afresh
    if hardware.process_rank() == 0:  # the others never write to it (their launch checked it before they started)
        tracking.check_target(spec.tracking)
        if spec.tracking.register_as:
            tracking.check_registry(str(spec.tracking.uri), str(spec.tracking.register_as))
    data, data_reused = load.shared_data(spec)
    log.info("Data: %s", ", ".join(f"{n} {len(s.dataset)} rows from {s.source}" for n, s in data.all_splits()))
    if resume and resume.fingerprint and resume.fingerprint != data.fingerprint:
        raise PipelineError(
            f"the data changed since run {resume.run_id} started (fingerprint {data.fingerprint} != {resume.fingerprint}): "
            "restore it, or start a new run."
        )
    args = (
        training_arguments(
            spec.training,
            machine,
            output_dir,
            spec.optimized_metric,
            spec.early_stopping is not None,
            spec.training_prompts,
        )  # fmt: skip
        if spec.stages.train
        else None
    )
    return Plan(spec, data, machine, args, data_reused, started)


class LeakageReport:
    """The leakage audit's report, made once: at once when it ran before the run opened (``drop``,
    ``fail``), else as soon as its thread (``warn``) is done, which training does not wait for."""

    def __init__(self, audit: leakage.Audit | leakage.Running | None, main_rank: bool) -> None:
        self.audit, self.main_rank, self.made = audit, main_rank, False

    def ready(self) -> bool:
        return not isinstance(self.audit, leakage.Running) or self.audit.done()

    def __call__(self) -> None:
        if not self.made:
            self.made = True
            report_leakage(leakage.found(self.audit), self.main_rank)


def report_leakage(found: leakage.Audit | None, main_rank: bool) -> None:
    """Rank 0: the leakage audit's metrics and matches (``leakage/``), and one line when an evaluation row leaks."""
    if found is None or not main_rank:
        return
    tracking.log_leakage(found.metrics(), found.matches)
    if found.dropped:
        log.warning("Leakage: %s; %d train rows dropped (data.leakage=drop)", found.summary(), found.dropped)
    elif found.leaks:
        log.warning(
            "Leakage: evaluation rows duplicate train rows (%s): listed in the run's leakage/ artifacts; "
            "data.leakage=drop trains without them, fail refuses the job",
            found.summary(),
        )


def open_run(cfg: DictConfig, plan: Plan, request: JobRequest):
    """The job's MLflow run (a context manager), tagged with what it needs to be replayed."""
    tags = {
        "pipeline.experiment": request.choices.get("experiment") or "none",
        "data.fingerprint": plan.data.fingerprint,
        **hardware.world_tags(plan.args, plan.machine.world_size),
        **process_clock.owner_tags(),
        "precision.intended": plan.machine.precision.intended,
        "precision.effective": plan.machine.precision.effective,
        "load.cache.data": "hit" if plan.data_reused else "miss",
        **request.tags,
    }
    given = cfg.tracking.run_name if cfg.tracking.run_name not in (None, "") else request.run_name
    name = str(given) if given is not None else " ".join([str(cfg.name), *request.overrides])  # run_name=1.5, name=2024
    experiment_id = tracking.open_experiment(cfg.tracking)
    run_id = request.resume.run_id if request.resume else None
    return tracking.job_run(cfg, experiment_id, name, request.overrides, tags, run_id=run_id)


def build_stage(plan: Plan) -> Built:
    """The models, evaluators and loss (``stages.build``), and what the build reports, logged."""
    built = build.build(plan.spec, plan.data, plan.machine)
    tracking.set_tags({"load.cache.model": "hit" if built.model_reused else "miss"})
    if built.lora is not None:
        log.info(
            "LoRA adapter: %d of %d parameters train",
            built.lora["peft_trainable_parameters"],
            built.lora["peft_total_parameters"],
        )
        tracking.log_metrics(built.lora)
    return built


def mine_stage(plan: Plan, built: Built) -> Plan:
    """Hard negatives for the train pairs (``stages=[load,mine,train,...]``): the mined set, logged as a
    training dataset input, replaces the train split. With several ranks, each machine's main rank mines
    (or finds the set in the cache) while the others wait, then they read its set from the cache."""
    from accelerate import PartialState

    spec = plan.spec
    train, inputs = plan.data.train_splits["train"], mine_inputs(spec, plan.data, built.miner_key)
    ranks = PartialState()
    with ranks.local_main_process_first():
        mined = mine.mine(train, built.load_miner, spec.mine, plan.data.candidates, inputs, ranks.is_local_main_process)
    tracking.log_mined_set(mined.split.dataset, mined.split.source, f"{spec.data.name}-mined", mined.cached)
    return dataclasses.replace(plan, data=dataclasses.replace(plan.data, train=mined.split))


def mine_inputs(spec: JobSpec, data: LoadedData, miner_key: str) -> dict:
    """What this job's mined set depends on (its cache key): train rows, candidates, miner, options, prompts."""
    train = data.train_splits["train"]
    prompts = mine.prompts_for(train, spec.prompts)
    miner = spec.miner or spec.model
    return mine.key_inputs(train, data.candidates, miner, spec.seed, spec.mine, prompts, spec.leaves, miner_key)


def final_evaluators(spec: JobSpec, built: Built) -> dict[str, Any]:
    """The evaluators the evaluate stage (and the baseline) run: each evaluator on its own ``splits``."""
    wanted = [f"{e.name}-{split}" for split in spec.eval_splits for e in spec.evaluators if split in e.splits]
    return {name: built.evaluators[name] for name in wanted if name in built.evaluators}


def dev_evaluator(built: Built):
    """What the trainer runs on the dev split: the one dev evaluator, or all of them in sequence
    (ranked by the first one's primary metric; each metric keeps its evaluator's prefix)."""
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

    dev = [evaluator for name, evaluator in built.evaluators.items() if name.endswith("-dev")]
    if len(dev) <= 1:
        return dev[0] if dev else None
    return SequentialEvaluator(dev, main_score_function=lambda scores: scores[0])


def baseline_step(plan: Plan, built: Built, output_dir: Path) -> dict[str, float]:
    """The starting model scored by the final evaluators, before training: ``baseline/`` metrics, copied
    from a finished run of the store with the same key when there is one and ``baseline_reuse`` allows
    (``pipeline.tracking.baseline``)."""
    from pipeline.stages.evaluate import evaluate

    scored = final_evaluators(plan.spec, built)
    if not plan.spec.stages.baseline or not scored:
        return {}
    key = baseline_key(built.model, baseline_scoring(plan, built, list(scored)), plan.spec.leaves)
    cached = tracking.find_baseline(key) if plan.spec.baseline_reuse else None
    if cached is not None:
        log.info("Baseline: reused from run %s (same model, data, evaluators and precision)", cached.source)
        tracking.copy_baseline_items(cached.source)
        tracking.record_baseline(key, cached.metrics, cached.source)
        return cached.metrics
    with hardware.autocast(plan.machine.precision, built.model.device.type), packing.uncounted(built.packer):
        outcome = evaluate(built.model, scored, output_dir / "baseline")
    metrics = {f"baseline/{name}": value for name, value in outcome.metrics.items()}
    tracking.log_baseline_items(outcome.items)
    tracking.record_baseline(key, metrics)
    return metrics


def baseline_scoring(plan: Plan, built: Built, scored: list[str]) -> Scoring:
    """What besides the model decides the baseline's numbers (its cache key)."""
    spec = plan.spec
    return Scoring(
        evaluators={evaluator.name: evaluator for evaluator in spec.evaluators},
        scored=scored,
        splits=plan.data.eval_splits,
        corpora=plan.data.corpora,
        prompts={evaluator.name: list(evaluator.prompts) for evaluator in spec.evaluators},
        matryoshka_dims=list(spec.loss.matryoshka_dims or []),
        batch_size=plan.machine.eval_batch_size,
        precision=plan.machine.precision.effective,
        packing_row_length=built.packer.row_length if built.packer else None,
    )


def train_stage(plan: Plan, built: Built, resume: Resume | None, leaks: LeakageReport) -> None:
    """Train the model in place; a guard trip or a signal ends the job here (FAILED / KILLED)."""
    from pipeline.runtime import callbacks
    from pipeline.runtime.dropout import masks
    from pipeline.stages.train import check_restored, check_trained, train

    spec = plan.spec
    dev = dev_evaluator(built) if spec.evaluates_during_training else None
    watch = callbacks.TrainingGuard(spec.guard, built.model, chance_loss(plan)) if spec.guard else None
    checkpoints = callbacks.Checkpoints()
    hooks = [callbacks.MLflowMetrics(), callbacks.StartupTime(plan.started), checkpoints, *([watch] if watch else [])]
    hooks.append(callbacks.WhenReady(leaks.ready, leaks))
    if spec.early_stopping is not None:
        from transformers import EarlyStoppingCallback

        hooks.append(EarlyStoppingCallback(spec.early_stopping.patience, spec.early_stopping.threshold))
    with (
        checkpoint.training(),
        hardware.training_attention(built.model, plan.machine),
        masks(built.model, plan.machine.bits_dropout),
    ):
        result = train(built.model, built.loss, plan.data.train_dataset, plan.args, dev_evaluator=dev, callbacks=hooks,
                       eval_dataset=plan.data.eval_loss_dataset, resume_from_checkpoint=resume.checkpoint if resume else None,
                       loss_region=hardware.loss_region(plan.machine))  # fmt: skip
    guard.raise_if_tripped(watch)
    checkpoint.raise_if_stopped(checkpoints)
    check_trained(result, plan.data.train_dataset, plan.args)
    log.info("Trained %d steps in %.1f s (final loss %.4f)", result.global_step, result.runtime_s, result.training_loss)
    if spec.early_stopping is not None and result.best_step is not None:
        check_restored(built.model, dev, result, spec.optimized_metric)
        log.info(
            "Best model: step %d (%s %.4f), restored and checked",
            result.best_step,
            spec.optimized_metric,
            result.best_metric,
        )
        tracking.log_metrics({"best_step": result.best_step, f"best_{spec.optimized_metric}": result.best_metric})


def chance_loss(plan: Plan) -> float | None:
    """The loss's value at chance, for the guard (one train set only: several mix their sizes)."""
    spec = plan.spec
    if spec.data.several:
        return None
    columns = list(plan.data.train_dataset.column_names)
    batch = int(spec.training.per_device_train_batch_size)
    loss = spec.loss
    ranks = plan.machine.world_size if loss.gathers_across_devices else 1  # candidates gathered from every rank
    return guard.chance_loss(loss.class_name, columns, batch, ranks, loss.matryoshka_scale)


def evaluate_stage(plan: Plan, built: Built, output_dir: Path) -> dict[str, float]:
    """Score the model on the evaluator's splits, in the profile's precision; log metrics and files."""
    from pipeline.stages.evaluate import NonFiniteMetricError, evaluate

    if not plan.spec.stages.evaluate:
        return {}
    scored = final_evaluators(plan.spec, built)
    try:
        with hardware.autocast(plan.machine.precision, built.model.device.type):  # as in training
            outcome = evaluate(built.model, scored, output_dir / "eval")
    except NonFiniteMetricError:  # the run ends FAILED, but what trained is kept
        log.warning("A final metric is not finite: the trained model is logged before the run ends FAILED")
        log_trained_model(plan.spec, built, output_dir)
        raise
    tracking.log_metrics(outcome.metrics)
    tracking.log_files(outcome.files, "eval")
    tracking.log_files(outcome.items, "items")
    return outcome.metrics


def log_trained_model(spec: JobSpec, built: Built, output_dir: Path) -> str | None:
    """The trained model, logged (``tracking.log_model``); its ``models:/`` URI, None when not logged."""
    if spec.stages.train and spec.tracking.log_model:
        if spec.peft is not None:  # the adapter alone, then the model with it merged in (loads without peft)
            built.model.transformers_model.save_pretrained(str(output_dir / "adapter"))
            tracking.log_files(sorted((output_dir / "adapter").iterdir()), "adapter")
            build.merge_lora(built.model, output_dir / "adapter")
        return tracking.log_model(built.model)
    return None


def log_outcome(
    cfg: DictConfig, spec: JobSpec, built: Built, output_dir: Path, started: float, metrics: dict[str, float]
) -> None:
    """The trained model (a new registry version with ``tracking.register_as``, its params the whole
    config), the job's seconds and the packer's token counts."""
    model_uri = log_trained_model(spec, built, output_dir)
    if model_uri and spec.tracking.register_as:
        name = str(spec.tracking.register_as)
        version = tracking.register_model(model_uri, name, tracking.config_params(cfg), metrics)
        log.info("Registered %s version %s", name, version)
    tracking.log_metrics({"job_seconds": time.perf_counter() - started, **packing.token_metrics(built.packer)})

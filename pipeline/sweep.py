"""Hydra multirun sweeps, the command's side: the Hydra callback that opens and closes a sweep, and
the wrapper that runs each job as a child run.

``python -m pipeline -m ...`` (any sweeper, any launcher) goes through :class:`MLflowSweep`, a Hydra
callback set in ``conf/config.yaml`` under ``hydra.callbacks``: before any job it checks the sweeper
and launcher, creates the experiment and the parent run (``pipeline.tracking.sweep`` writes the MLflow
records: parent, children, leaderboard); when the sweep ends it ranks the children and ends the parent;
at exit after an error or a signal it ends the parent and any orphaned child KILLED or FAILED.
Exit codes and one-line errors go through ``pipeline.cli.reported``.

The callback hands the sweep to the jobs in the ``PIPELINE_SWEEP`` environment variable (JSON), which
the joblib launcher's worker processes inherit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError, tracking
from pipeline.cli import reported
from pipeline.tracking.direction import sweep_direction
from pipeline.tracking.scrub import metric_name, scrub
from pipeline.tracking.study import check_heartbeat, check_search_space, check_study_storage, previous_parent, settings
from pipeline.tracking.sweep import (
    ENV,
    FailedJob,
    Parent,
    Sweep,
    create_parent,
    end_orphans,
    finish,
    job_run_name,
    job_tags,
    link_study,
    override_key,
    record_failure,
    swept_keys,
)

if TYPE_CHECKING:
    from pipeline.job import JobRequest

log = logging.getLogger(__name__)

# Set on Ctrl-C / SIGTERM: the parent then ends KILLED rather than FAILED.
INTERRUPTED = {"value": False}
ENDING: dict[str, str | None] = {"reason": None}  # set once the sweep's process is ending its runs


class MLflowSweep(Callback):
    """Creates the experiment and parent run before a multirun's jobs; ranks them when it ends."""

    def __init__(self) -> None:
        self.sweep: Sweep | None = None

    # -- before the jobs ----------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with reported():  # a typo in a file or a swept key: refused as a single job would be, before the parent
            check_sweep_keys(config)
        with reported(prefix="error: the sweep could not start", errors=Exception):
            self.sweep = self._start(config)
        os.environ[ENV] = json.dumps(self.sweep.__dict__)
        atexit.register(self._end_if_running)
        _note_interruptions()
        log.info(
            "Sweep %s: parent MLflow run %s in experiment %r",
            self.sweep.sweep_id,
            self.sweep.parent_run_id,
            self.sweep.experiment_name,
        )

    def _start(self, config: DictConfig) -> Sweep:
        hydra_cfg = config.hydra
        needs_metric, direction = _check_sweeper(config)
        study = settings(config) if needs_metric else None
        if study:
            check_study_storage(study.storage)
        tracking.check_target(config.tracking)  # creates a new SQLite store: after every refusal above
        previous = previous_parent(study, direction) if study else None  # the study ran before: its last parent
        experiment_id = tracking.open_experiment(config.tracking)
        keys = swept_keys(hydra_cfg)
        sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        run_id = _create_parent(config, experiment_id, sweep_id, keys, direction)
        if study:
            link_study(config.tracking.uri, run_id, study, previous)
        return Sweep(
            tracking_uri=str(config.tracking.uri),
            experiment_id=experiment_id,
            experiment_name=str(config.tracking.experiment_name),
            parent_run_id=run_id,
            sweep_id=sweep_id,
            swept_keys=tuple(keys),
            direction=direction,
            needs_metric=needs_metric,
            study_storage=study.storage if study else None,
            study_name=study.name if study else None,
        )

    # -- after the jobs -----------------------------------------------------------------------
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is None:
            return
        with reported(prefix="error: the sweep's leaderboard could not be written", errors=Exception, code=1):
            failed, total = finish(self.sweep, str(config.get("optimized_metric") or ""))
        sweep, self.sweep = self.sweep, None  # ended: nothing left for the exit handler
        atexit.unregister(self._end_if_running)
        os.environ.pop(ENV, None)
        see = f"python -m pipeline.compare --parent {sweep.parent_run_id} --tracking-uri {scrub(sweep.tracking_uri)}"
        if failed:
            print(
                f"sweep {sweep.sweep_id}: {failed} of {total} jobs FAILED (parent run {sweep.parent_run_id}); see: {see}",
                file=sys.stderr,
            )
            sys.exit(1)
        print(
            f"sweep {sweep.sweep_id}: {total} jobs FINISHED; parent run {sweep.parent_run_id} holds the leaderboard; see: {see}"
        )

    def _end_if_running(self) -> None:
        """At exit after an error or Ctrl-C: never leave the parent RUNNING."""
        if self.sweep is None:
            return
        from pipeline.tracking.run import end_run

        ENDING["reason"] = ENDING["reason"] or "the sweep stopped before all jobs ran (interrupted or crashed)"
        status = "KILLED" if INTERRUPTED["value"] else "FAILED"
        end_orphans(self.sweep, status)
        end_run(self.sweep.parent_run_id, status, ENDING["reason"], tracking_uri=self.sweep.tracking_uri)


def check_sweep_keys(config: DictConfig) -> None:
    """Every job of the sweep would refuse an unknown key: refuse it once, before the parent run exists.
    The config files (an experiment's typo) are checked as composed for the sweep; a swept key
    (``training.lerning_rate=1e-5,1e-4`` or an Optuna ``params`` key) must name a key of that config or
    a config group."""
    from pipeline.stages import config_files, schema

    choices, roots = dict(config.hydra.runtime.choices), config_files.config_roots(config.hydra.runtime.config_sources)
    schema.check_keys(config, choices, roots)
    for group, options in swept_options(config.hydra, choices).items():
        known = group_options(config.hydra, group)
        for option in options:
            config_files.check_choice(group, option, known)
            schema.check_option(group, option, roots)
    missing, added = object(), {str(o).split("=", 1)[0][1:] for o in config.hydra.overrides.task if str(o)[:1] == "+"}
    for key in swept_keys(config.hydra):
        if key in choices or key in added or OmegaConf.select(config, key, default=missing) is not missing:
            continue
        unknown = schema.unknown_path(key)
        if unknown is not None:
            raise PipelineError(unknown.describe(None))
        raise PipelineError(f"command line: the sweep varies {key!r}, which the config does not have: fix the key.")


def swept_options(hydra_cfg: DictConfig, choices: dict[str, Any]) -> dict[str, list[str]]:
    """Config group -> the options the sweep goes through: ``experiment=a,b`` on the command line, or
    ``experiment: choice(a, b)`` in an Optuna search space (``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = [f"{key}={value}" for key, value in (hydra_cfg.sweeper.get("params") or {}).items() if key in choices]
    parsed = OverridesParser.create().parse_overrides([str(o) for o in hydra_cfg.overrides.task] + space)
    return {
        o.get_key_element(): [str(v) for v in o.sweep_string_iterator()]
        for o in parsed
        if o.is_sweep_override() and o.get_key_element() in choices
    }


def group_options(hydra_cfg: DictConfig, group: str) -> list[str]:
    """The options of a config group (``loss``, ``model@guide``) in Hydra's own config search path: the
    primary config's folder, ``--config-path``, ``hydra.searchpath`` and plugins' packaged configs."""
    from hydra.core.global_hydra import GlobalHydra

    searchpath = [str(o) for o in hydra_cfg.overrides.hydra if str(o).startswith("hydra.searchpath=")]
    loader = GlobalHydra.instance().config_loader()
    return loader.get_group_options(group.split("@")[0], config_name=hydra_cfg.job.config_name, overrides=searchpath)


def _check_sweeper(config: DictConfig) -> tuple[bool, str]:
    """(whether the sweeper optimises the returned metric, its direction), checked before any job. The
    direction is ``hydra.sweeper.direction`` or, null or absent (Hydra's basic sweeper), the metric's own."""
    sweeper = config.hydra.sweeper
    needs_metric = "optuna" in str(sweeper._target_).lower()
    if needs_metric and not config.get("optimized_metric"):
        raise PipelineError(
            "the Optuna sweeper optimises optimized_metric, which is null: set optimized_metric=NAME (e.g. sts-dev_spearman_cosine)."
        )
    direction = sweep_direction(sweeper.get("direction"), config.get("optimized_metric"))
    if needs_metric:
        check_search_space(dict(sweeper.get("params") or {}), [str(o) for o in config.hydra.overrides.task])
        check_heartbeat(sweeper.get("heartbeat_interval"), sweeper.get("grace_period"))
    if str(config.hydra.launcher._target_).endswith("SlurmLauncher") and not shutil.which("sbatch"):
        raise PipelineError(
            "sweep=slurm submits each job with sbatch, which is not on the PATH: run the sweep on the "
            "cluster's login node, or sweep=submitit_local to run the same jobs on this machine."
        )
    return needs_metric, direction


def _create_parent(config: DictConfig, experiment_id: str, sweep_id: str, keys: list[str], direction: str) -> str:
    """The sweep's parent run, RUNNING: its tags, its search space as ``sweep.*`` params, its overrides."""
    hydra_cfg = config.hydra
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    secrets = tracking.config_secrets(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), overrides)
    name = f"sweep {config.name} " + " ".join(o for o in overrides if override_key(o) in keys)
    tags = {
        "pipeline.role": "sweep",
        "pipeline.sweep_id": sweep_id,
        "pipeline.experiment_name": str(config.tracking.experiment_name),
        "pipeline.sweeper": str(hydra_cfg.sweeper._target_).rsplit(".", 1)[-1],
        "pipeline.launcher": str(hydra_cfg.launcher._target_).rsplit(".", 1)[-1],
        "pipeline.optimized_metric": str(config.get("optimized_metric") or ""),
        "pipeline.direction": direction,
    }
    space = {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) in keys}
    space.update({str(k): str(v) for k, v in (hydra_cfg.sweeper.get("params") or {}).items()})
    parent = Parent(experiment_id, name.strip(), tags, space, overrides)
    return create_parent(str(config.tracking.uri), parent, secrets)


def _note_interruptions() -> None:
    """In the sweep's own process, Ctrl-C / SIGTERM mark the sweep interrupted (its parent then ends
    KILLED, not FAILED) before they stop it: with a launcher whose jobs run in worker processes
    (joblib), the jobs' own handlers never run here. Only the first signal stops the process: one that
    comes while the sweep is already ending its runs (after a first signal or an error) is noted, never
    raised in the middle of that clean-up."""
    import signal

    def stop(signum, frame):
        first = not INTERRUPTED["value"] and ENDING["reason"] is None
        INTERRUPTED["value"] = True
        if first:
            raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def lost_worker(error: BaseException) -> str | None:
    """The one-line account of a launcher's worker process that died mid-job (joblib's
    ``TerminatedWorkerError``: the OS's out-of-memory killer, a segfault, a ``kill -9``), else None.
    The launcher then stops the sweep; the exit handler ends its runs FAILED with this reason."""
    if type(error).__name__ != "TerminatedWorkerError":
        return None
    codes = re.search(r"exit codes of the workers are (\{[^}]*\})", str(error))
    reason = (
        f"a worker process of the sweep died mid-job (exit code {codes.group(1) if codes else 'unknown'}: killed "
        "by the OS, out of memory or a crash); the launcher stopped the sweep"
    )
    ENDING["reason"] = reason
    return reason


# ----------------------------------------------------------------------------------------------
# The job side (``pipeline.__main__`` inside a multirun)
# ----------------------------------------------------------------------------------------------


def run_sweep_job(
    cfg: DictConfig,
    sweep: Sweep,
    job_number: int,
    output_dir: Path,
    request: JobRequest,
    start,
) -> float | None:
    """One job of a sweep as a child run, started by ``start`` (``pipeline.start.start_job``) with the
    sweep's tags and the swept values as its name; a failure is recorded (a FAILED child) and the sweep
    goes on. Returns the value the sweeper optimises."""
    overrides = request.overrides
    run_name = job_run_name(sweep, overrides, str(cfg.name))
    try:
        prepare_job(cfg, sweep)
        result = start(cfg, output_dir, replace(request, tags=job_tags(sweep, job_number), run_name=run_name))
        value = (
            objective(sweep, cfg.get("optimized_metric"), result.metrics)
            if sweep.needs_metric
            else result.optimized_metric
        )
    except KeyboardInterrupt:
        INTERRUPTED["value"] = True
        with reported(interrupted="interrupted: the MLflow runs were ended KILLED"):
            raise
    except Exception as error:
        if os.environ.get("PIPELINE_TRACEBACK"):
            log.exception("job %d failed", job_number)
        run_id = record_failure(sweep, job_number, run_name, overrides, error, failed_params(cfg, overrides))
        line = f"job {job_number} ({run_name}) FAILED, MLflow run {run_id}: {error}"
        print(scrub(line, tracking.config_secrets(cfg, overrides)), file=sys.stderr)
        return None
    line = f"job {job_number} ({run_name}) FINISHED, MLflow run {result.run_id}: {cfg.optimized_metric}={value}"
    print(scrub(line, tracking.config_secrets(cfg, overrides)))
    return value


def prepare_job(cfg: DictConfig, sweep: Sweep) -> None:
    """Point the job at the sweep's experiment (created by the callback: no race to create it)."""
    if str(cfg.tracking.uri) != sweep.tracking_uri:
        raise PipelineError(
            f"tracking.uri differs between the sweep ({sweep.tracking_uri}) and a job ({cfg.tracking.uri}): do not sweep tracking.uri."
        )
    cfg.tracking.experiment_name = sweep.experiment_name


def objective(sweep: Sweep, name: str | None, metrics: dict[str, float]) -> float | None:
    """The value the sweeper optimises, from the job's final metrics (sentence-transformers' names: the
    metric is looked up under that spelling, whichever was typed); a clear error when the job did not log it."""
    if not name:
        return None
    if metric_name(name) not in metrics:
        raise PipelineError(
            f"optimized_metric={name!r} was not logged by this job (it logged: {', '.join(sorted(metrics)) or 'no final metrics'}): "
            "set optimized_metric to one of these, or add the split to evaluators.NAME.splits."
        )
    return metrics[metric_name(name)]


def failed_params(cfg: DictConfig, overrides: list[str]) -> FailedJob:
    """What a failed job's child run records: its config as params (the swept values, unresolved, when
    the config itself is what failed) and the secrets to scrub."""
    from omegaconf.errors import OmegaConfBaseException

    secrets = tracking.config_secrets(cfg, overrides)
    try:
        params = tracking.config_params(cfg)
    except OmegaConfBaseException:
        params = {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
    return FailedJob(params, secrets)

"""Hydra multirun sweeps in MLflow: one parent run per sweep, one child run per job.

``python -m pipeline -m ...`` (any sweeper, any launcher) goes through :class:`MLflowSweep`, a Hydra
callback set in ``conf/config.yaml`` under ``hydra.callbacks``. What it writes to MLflow:

- before any job starts: the experiment (created once, which also creates or migrates a fresh
  SQLite store, so parallel jobs never race to do either) and the parent run, RUNNING, with the
  sweep's overrides as ``sweep.<key>`` params, the ``overrides.yaml`` artifact and the tags
  ``pipeline.role=sweep``, ``pipeline.sweep_id``, ``pipeline.sweeper``, ``pipeline.launcher``; an
  Optuna sweep's parent also ``optuna.study_name``, ``optuna.storage`` and, when the study ran before,
  ``optuna.previous_parent`` (``pipeline.tracking.study``);
- every job's run is a child: ``mlflow.parentRunId``, ``pipeline.sweep_id``, ``pipeline.role=job``,
  ``pipeline.sweep_job`` (the Hydra job number), named by its swept values; a job that fails before
  its run starts (a bad swept value) still gets a FAILED child with the reason;
- when the sweep ends: ``leaderboard.csv`` / ``leaderboard.md`` (children ranked by
  ``optimized_metric``), ``comparison.png``, an Optuna sweep's ``optimization_history.png`` and
  ``param_importances.png`` (its whole study), metrics ``sweep.jobs`` / ``sweep.failed`` /
  ``sweep.best``; the parent ends FINISHED, or FAILED when a job failed (the process then exits 1
  with a summary). An interrupted or crashed sweep ends its parent KILLED or FAILED at exit.

The callback hands the sweep to the jobs in the ``PIPELINE_SWEEP`` environment variable (JSON), which
the joblib launcher's worker processes inherit.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.tracking.direction import sweep_direction
from pipeline.tracking.scrub import (
    HIDDEN,
    MAX_PARAM_LENGTH,
    MAX_RUN_NAME_LENGTH,
    MAX_TAG_LENGTH,
    is_secret,
    metric_key,
    metric_name,
    scrub,
)
from pipeline.tracking.study import (
    StudySettings,
    check_heartbeat,
    check_search_space,
    check_study_storage,
    previous_parent,
    record_parent,
    settings,
)

log = logging.getLogger(__name__)

ENV = "PIPELINE_SWEEP"
# Set by the entry point on Ctrl-C / SIGTERM: the parent then ends KILLED rather than FAILED.
INTERRUPTED = {"value": False}
ENDING: dict[str, str | None] = {"reason": None}  # set once the sweep's process is ending its runs


@dataclass(frozen=True)
class Sweep:
    """What a job needs to know about the sweep it belongs to."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    sweep_id: str
    swept_keys: tuple[str, ...]
    direction: str  # "maximize" or "minimize"
    needs_metric: bool  # the sweeper optimises the returned metric (Optuna)
    study_storage: str | None = None  # the Optuna sweeper's study (pipeline.tracking.study)
    study_name: str | None = None


def current() -> Sweep | None:
    """The sweep this process's jobs belong to (None outside ``-m``)."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    data = json.loads(raw)
    return Sweep(**{**data, "swept_keys": tuple(data["swept_keys"])})


def override_key(override: str) -> str:
    """``+training.x=1`` -> ``training.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(hydra_cfg: DictConfig) -> list[str]:
    """Keys the sweep varies: sweep syntax in the overrides plus the sweeper's own search space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    keys = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    params = hydra_cfg.sweeper.get("params") or {}
    keys += [str(key) for key in params if str(key) not in keys]
    return keys


class MLflowSweep(Callback):
    """Creates the experiment and parent run before a multirun's jobs; ranks them when it ends."""

    def __init__(self) -> None:
        self.sweep: Sweep | None = None

    # -- before the jobs ----------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.sweep = self._start(config)
        except Exception as error:
            if os.environ.get("PIPELINE_TRACEBACK"):
                raise
            print(f"error: the sweep could not start: {scrub(str(error))}", file=sys.stderr)
            sys.exit(2)
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
        from pipeline import tracking

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
            _link_study(config.tracking.uri, run_id, study, previous)
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
        try:
            failed, total = finish(self.sweep, str(config.get("optimized_metric") or ""))
        except Exception as error:
            if os.environ.get("PIPELINE_TRACEBACK"):
                raise
            print(f"error: the sweep's leaderboard could not be written: {scrub(str(error))}", file=sys.stderr)
            sys.exit(1)
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
    import mlflow

    from pipeline import tracking

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
        "pipeline.overrides": scrub(" ".join(overrides), secrets, MAX_TAG_LENGTH),
        "pipeline.optimized_metric": str(config.get("optimized_metric") or ""),
        "pipeline.direction": direction,
    }
    client = mlflow.MlflowClient(str(config.tracking.uri))
    run_id = client.create_run(
        experiment_id, run_name=scrub(name.strip(), secrets, MAX_RUN_NAME_LENGTH), tags=tags
    ).info.run_id
    space = {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) in keys}
    space.update({str(k): str(v) for k, v in (hydra_cfg.sweeper.get("params") or {}).items()})
    params = [
        mlflow.entities.Param(f"sweep.{k}", HIDDEN if is_secret(k, v) else scrub(v, secrets, MAX_PARAM_LENGTH))
        for k, v in space.items()
    ]
    if params:
        client.log_batch(run_id, params=params)
    client.log_text(run_id, scrub(OmegaConf.to_yaml(OmegaConf.create(overrides)), secrets), "overrides.yaml")
    return run_id


def _link_study(tracking_uri: str, run_id: str, study: StudySettings, previous: str | None) -> None:
    """Tag the parent with its Optuna study (``optuna.study_name``, ``optuna.storage``) and, when the
    study ran before, ``optuna.previous_parent``: the parent run of the sweep that ran it last."""
    import mlflow

    client = mlflow.MlflowClient(str(tracking_uri))
    client.set_tag(run_id, "optuna.study_name", study.name[:MAX_TAG_LENGTH])
    client.set_tag(run_id, "optuna.storage", scrub(study.storage, limit=MAX_TAG_LENGTH))
    if previous:
        client.set_tag(run_id, "optuna.previous_parent", previous)
        log.info("Continuing Optuna study %r; its previous sweep's parent run: %s", study.name, previous)
    record_parent(study, run_id)


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


def end_orphans(sweep: Sweep, status: str = "FAILED") -> list[str]:
    """End the sweep's children still RUNNING: their process died without ending them (a worker
    killed by the OS, or stopped with the sweep)."""
    from pipeline.tracking.run import end_run
    from pipeline.tracking.store import client

    found = client(sweep.tracking_uri).search_runs(
        [sweep.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}' and attributes.status = 'RUNNING'",
    )
    reason = "interrupted with the sweep" if status == "KILLED" else "the job's process died before the job ended"
    for run in found:
        end_run(run.info.run_id, status, reason, tracking_uri=sweep.tracking_uri)
    return [run.info.run_id for run in found]


def finish(sweep: Sweep, optimized_metric: str) -> tuple[int, int]:
    """Log the leaderboard, the plot and the summary on the parent and end it; (failed, total)."""
    import mlflow

    from pipeline.tracking import leaderboard, study
    from pipeline.tracking.run import end_run

    client = mlflow.MlflowClient(sweep.tracking_uri)
    end_orphans(sweep)  # every job has returned: a child still RUNNING lost its process
    runs = leaderboard.search(sweep.tracking_uri, [sweep.experiment_id], parent=sweep.parent_run_id)
    total = len(runs)
    failed = int((runs["status"] != "FINISHED").sum()) if total else 0
    with tempfile.TemporaryDirectory() as folder:
        if total:
            write_leaderboard(runs, sweep, optimized_metric or None, Path(folder))
        if sweep.study_name and sweep.study_storage:
            study.write_plots(StudySettings(sweep.study_storage, sweep.study_name), Path(folder))
        for path in sorted(Path(folder).iterdir()):
            client.log_artifact(sweep.parent_run_id, str(path))
    if total:
        url = leaderboard.compare_url(sweep.tracking_uri, sweep.experiment_id, list(runs["run_id"]))
        client.set_tag(sweep.parent_run_id, "pipeline.compare_url", url[:MAX_TAG_LENGTH])
        print(f"the {total} jobs side by side in MLflow's compare page: {url}")
    metrics = {"sweep.jobs": float(total), "sweep.failed": float(failed)}
    column = f"metrics.{metric_key(optimized_metric)}"
    if total and optimized_metric and column in runs:
        values = [v for v in runs.loc[runs["status"] == "FINISHED", column] if v is not None and math.isfinite(v)]
        if values:
            metrics["sweep.best"] = min(values) if sweep.direction == "minimize" else max(values)
    for key, value in metrics.items():
        client.log_metric(sweep.parent_run_id, key, value)
    reason = f"{failed} of {total} jobs failed" if failed else None if total else "no job ran"
    end_run(
        sweep.parent_run_id, "FAILED" if failed or not total else "FINISHED", reason, tracking_uri=sweep.tracking_uri
    )
    log.info(
        "Sweep %s ended: %d jobs, %d failed; leaderboard on parent run %s",
        sweep.sweep_id,
        total,
        failed,
        sweep.parent_run_id,
    )
    return failed, total


def write_leaderboard(runs, sweep: Sweep, optimized_metric: str | None, folder: Path) -> None:
    """``leaderboard.csv`` / ``.md`` and ``comparison.png`` in ``folder``: one row per job, or, when
    ``seed`` is swept, one row per configuration (mean, std, n over its seeds; ``runs.csv`` then
    keeps the row per job)."""
    from pipeline.tracking import leaderboard

    ascending = sweep.direction == "minimize"
    board = leaderboard.table(runs, optimized_metric, ascending=ascending)
    if "seed" in sweep.swept_keys and "seed" in board.columns:
        (folder / "runs.csv").write_text(board.to_csv(index=False), encoding="utf-8")
        board = leaderboard.grouped(board, "seed", optimized_metric, ascending=ascending)
    (folder / "leaderboard.csv").write_text(board.to_csv(index=False), encoding="utf-8")
    (folder / "leaderboard.md").write_text(leaderboard.markdown(board), encoding="utf-8")
    leaderboard.plot(board, optimized_metric, folder / "comparison.png", title=f"sweep {sweep.sweep_id}")


# ----------------------------------------------------------------------------------------------
# The job side (called by ``pipeline.__main__`` inside a multirun)
# ----------------------------------------------------------------------------------------------


def run_sweep_job(
    cfg: DictConfig,
    sweep: Sweep,
    job_number: int,
    output_dir: Path,
    overrides: list[str],
    choices: dict[str, str],
    start,
) -> float | None:
    """One job of a sweep as a child run, started by ``start`` (``pipeline.start.start_job``); a failure
    is recorded (a FAILED child) and the sweep goes on. Returns the value the sweeper optimises."""
    run_name = job_run_name(sweep, overrides, str(cfg.name))
    try:
        prepare_job(cfg, sweep)
        result = start(cfg, output_dir, overrides, choices, extra_tags=job_tags(sweep, job_number), run_name=run_name)
        value = (
            objective(sweep, cfg.get("optimized_metric"), result.metrics)
            if sweep.needs_metric
            else result.optimized_metric
        )
    except KeyboardInterrupt:
        INTERRUPTED["value"] = True
        print("interrupted: the MLflow runs were ended KILLED", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if os.environ.get("PIPELINE_TRACEBACK"):
            log.exception("job %d failed", job_number)
        run_id = record_failure(sweep, job_number, run_name, overrides, error, cfg)
        print(f"job {job_number} ({run_name}) FAILED, MLflow run {run_id}: {scrub(str(error))}", file=sys.stderr)
        return None
    print(f"job {job_number} ({run_name}) FINISHED, MLflow run {result.run_id}: {cfg.optimized_metric}={value}")
    return value


def job_tags(sweep: Sweep, job_number: int) -> dict[str, str]:
    return {
        "mlflow.parentRunId": sweep.parent_run_id,
        "pipeline.sweep_id": sweep.sweep_id,
        "pipeline.role": "job",
        "pipeline.sweep_job": str(job_number),
        "pipeline.experiment_name": sweep.experiment_name,
    }


def job_run_name(sweep: Sweep, overrides: list[str], name: str) -> str:
    """The swept values of this job, e.g. ``training.learning_rate=1e-05 seed=2``."""
    swept = [o for o in overrides if override_key(o) in sweep.swept_keys]
    return (" ".join(swept) or name)[:MAX_RUN_NAME_LENGTH]


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
            "set optimized_metric to one of these, or add the split to evaluator.splits."
        )
    return metrics[metric_name(name)]


def record_failure(
    sweep: Sweep, job_number: int, run_name: str, overrides: list[str], error: BaseException, cfg: DictConfig
) -> str:
    """Mark the job's child run FAILED with the reason, creating the child if the job failed before it
    (with the job's config as params, so the leaderboard shows its swept values). A child the job
    already ended FAILED keeps the reason it was given there (secrets scrubbed, a launcher's reason
    first)."""
    import mlflow
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.tracking.record import config_params
    from pipeline.tracking.run import config_secrets, end_run

    secrets = config_secrets(cfg, overrides)
    client = mlflow.MlflowClient(sweep.tracking_uri)
    found = client.search_runs(
        [sweep.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep.parent_run_id}' and tags.`pipeline.sweep_job` = '{job_number}'",
    )
    if found and found[0].info.status == "FAILED":
        return found[0].info.run_id
    if found:
        run_id = found[0].info.run_id
    else:
        tags = {
            **job_tags(sweep, job_number),
            "pipeline.overrides": scrub(" ".join(overrides), secrets, MAX_TAG_LENGTH),
        }
        name = scrub(run_name, secrets, MAX_RUN_NAME_LENGTH)
        run_id = client.create_run(sweep.experiment_id, run_name=name, tags=tags).info.run_id
        try:
            params = config_params(cfg)
        except OmegaConfBaseException:  # the config itself is what failed: the swept values, unresolved
            params = {override_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
        params = {k: HIDDEN if is_secret(k, v) else scrub(v, secrets, MAX_PARAM_LENGTH) for k, v in params.items()}
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])  # chunked by MLflow
    end_run(run_id, "FAILED", f"{type(error).__name__}: {error}", secrets=secrets, tracking_uri=sweep.tracking_uri)
    return run_id

"""Hydra multirun sweeps in MLflow: one parent run per sweep, one child run per job, the leaderboard.

The command's side (``pipeline.sweep``: the Hydra callback and the job wrapper) decides when; this
module writes the records:

- before any job starts: the parent run, RUNNING (:func:`create_parent`), with the sweep's overrides
  as ``sweep.<key>`` params, the ``overrides.yaml`` artifact and the tags ``pipeline.role=sweep``,
  ``pipeline.sweep_id``, ``pipeline.sweeper``, ``pipeline.launcher``; an Optuna sweep's parent also
  ``optuna.study_name``, ``optuna.storage`` and, when the study ran before, ``optuna.previous_parent``
  (:func:`link_study`, ``pipeline.tracking.study``);
- every job's run is a child: ``mlflow.parentRunId``, ``pipeline.sweep_id``, ``pipeline.role=job``,
  ``pipeline.sweep_job`` (the Hydra job number), named by its swept values (:func:`job_tags`,
  :func:`job_run_name`); a job that fails before its run starts (a bad swept value) still gets a FAILED
  child with the reason (:func:`record_failure`);
- when the sweep ends (:func:`finish`): ``leaderboard.csv`` / ``leaderboard.md`` (children ranked by
  ``optimized_metric``, each row's difference from the best with its 95% interval and ``tied``),
  ``comparison.png``, ``intervals.png`` (a forest plot of those intervals), an Optuna sweep's ``optimization_history.png`` and
  ``param_importances.png`` (its whole study), metrics ``sweep.jobs`` / ``sweep.failed`` /
  ``sweep.best``; the parent ends FINISHED, or FAILED when a job failed. Children a dead process left
  RUNNING end FAILED or KILLED (:func:`end_orphans`).

The sweep reaches its jobs in the ``PIPELINE_SWEEP`` environment variable (JSON: :class:`Sweep`), which
the joblib launcher's worker processes inherit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.tracking.scrub import (
    HIDDEN,
    MAX_PARAM_LENGTH,
    MAX_RUN_NAME_LENGTH,
    MAX_TAG_LENGTH,
    is_secret,
    metric_key,
    scrub,
)
from pipeline.tracking.study import (
    StudySettings,
    record_parent,
)

log = logging.getLogger(__name__)

ENV = "PIPELINE_SWEEP"


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


@dataclass(frozen=True)
class Parent:
    """The sweep's parent run, as the callback (``pipeline.sweep``) describes it."""

    experiment_id: str
    name: str
    tags: dict[str, str]  # pipeline.role, sweep id, sweeper, launcher, metric and direction
    space: dict[str, str]  # swept key -> its values (sweep syntax or the sweeper's search space)
    overrides: list[str]


def create_parent(tracking_uri: str, parent: Parent, secrets: list[str]) -> str:
    """The sweep's parent run, RUNNING: its tags, its search space as ``sweep.*`` params, its overrides
    (``pipeline.overrides`` tag, ``overrides.yaml``), every value scrubbed of ``secrets``."""
    import mlflow

    overrides = parent.overrides
    tags = {**parent.tags, "pipeline.overrides": scrub(" ".join(overrides), secrets, MAX_TAG_LENGTH)}
    client = mlflow.MlflowClient(tracking_uri)
    name = scrub(parent.name, secrets, MAX_RUN_NAME_LENGTH)
    run_id = client.create_run(parent.experiment_id, run_name=name, tags=tags).info.run_id
    params = [
        mlflow.entities.Param(f"sweep.{k}", HIDDEN if is_secret(k, v) else scrub(v, secrets, MAX_PARAM_LENGTH))
        for k, v in parent.space.items()
    ]
    if params:
        client.log_batch(run_id, params=params)
    client.log_text(run_id, scrub(OmegaConf.to_yaml(OmegaConf.create(overrides)), secrets), "overrides.yaml")
    return run_id


def link_study(tracking_uri: str, run_id: str, study: StudySettings, previous: str | None) -> None:
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
    board = None
    with tempfile.TemporaryDirectory() as folder:
        if total:
            board = write_leaderboard(runs, sweep, optimized_metric or None, Path(folder))
        if sweep.study_name and sweep.study_storage:
            study.write_plots(StudySettings(sweep.study_storage, sweep.study_name), Path(folder))
        client.log_artifacts(sweep.parent_run_id, folder)  # every file at the parent's artifact root, one call
    if total:
        url = leaderboard.compare_url(sweep.tracking_uri, sweep.experiment_id, list(runs["run_id"]))
        client.set_tag(sweep.parent_run_id, "pipeline.compare_url", url[:MAX_TAG_LENGTH])
        print(f"the {total} jobs side by side in MLflow's compare page: {url}")
    if board is not None and board.attrs.get("intervals"):
        print(leaderboard.closing_lines(board))
    metrics = {"sweep.jobs": float(total), "sweep.failed": float(failed)}
    column = f"metrics.{metric_key(optimized_metric)}"
    if total and optimized_metric and column in runs:
        values = [v for v in runs.loc[runs["status"] == "FINISHED", column] if v is not None and math.isfinite(v)]
        if values:
            metrics["sweep.best"] = min(values) if sweep.direction == "minimize" else max(values)
    now = int(time.time() * 1000)
    client.log_batch(sweep.parent_run_id, metrics=[mlflow.entities.Metric(k, v, now, 0) for k, v in metrics.items()])
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


def write_leaderboard(runs, sweep: Sweep, optimized_metric: str | None, folder: Path):
    """``leaderboard.csv`` / ``.md`` and ``comparison.png`` in ``folder``: one row per job, or, when
    ``seed`` is swept, one row per configuration (mean, std, n over its seeds; ``runs.csv`` then
    keeps the row per job); each row's difference from the best with its 95% interval and ``tied``, and
    those intervals as a forest plot ``intervals.png``, when the jobs logged their items. Returns the board."""
    from pipeline.tracking import comparison, leaderboard

    ascending = sweep.direction == "minimize"
    board = leaderboard.table(runs, optimized_metric, ascending=ascending)
    if "seed" in sweep.swept_keys and "seed" in board.columns:
        (folder / "runs.csv").write_text(board.to_csv(index=False), encoding="utf-8")
        board = leaderboard.grouped(board, "seed", optimized_metric, ascending=ascending)
    client = mlflow_client(sweep.tracking_uri)
    board = leaderboard.with_intervals(board, client, optimized_metric, comparison.IN_JOB_RESAMPLES, 0, ascending)
    (folder / "leaderboard.csv").write_text(board.to_csv(index=False), encoding="utf-8")
    (folder / "leaderboard.md").write_text(leaderboard.markdown(board), encoding="utf-8")
    leaderboard.plot(board, optimized_metric, folder / "comparison.png", title=f"sweep {sweep.sweep_id}")
    if board.attrs.get("intervals"):
        rows = list(board.attrs["intervals"].items())
        comparison.forest(
            rows, folder / "intervals.png", f"sweep {sweep.sweep_id}: {board.attrs['metric']}", "the best"
        )
    return board


def mlflow_client(uri: str):
    from pipeline.tracking.store import client

    return client(uri)


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


@dataclass(frozen=True)
class FailedJob:
    """What a failed job's child run records besides the reason."""

    params: dict[str, str]  # the job's config as params (or its swept values)
    secrets: list[str]  # scrubbed from everything written


def record_failure(
    sweep: Sweep, job_number: int, run_name: str, overrides: list[str], error: BaseException, job: FailedJob
) -> str:
    """Mark the job's child run FAILED with the reason, creating the child if the job failed before it
    (with the job's config as params, so the leaderboard shows its swept values). A child the job
    already ended FAILED keeps the reason it was given there (secrets scrubbed, a launcher's reason
    first)."""
    import mlflow

    from pipeline.tracking.run import end_run

    secrets = job.secrets
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
        params = {k: HIDDEN if is_secret(k, v) else scrub(v, secrets, MAX_PARAM_LENGTH) for k, v in job.params.items()}
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])  # chunked by MLflow
    end_run(run_id, "FAILED", f"{type(error).__name__}: {error}", secrets=secrets, tracking_uri=sweep.tracking_uri)
    return run_id

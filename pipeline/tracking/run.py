"""The one MLflow run of a job, and the one way any run ends with a reason.

:func:`job_run` starts (or continues) the run, logs its config, and ends it FINISHED, FAILED or
KILLED: nothing leaves a run RUNNING. What it writes: params (the flattened config), tags (package
versions, git state, overrides, the caller's tags), artifacts ``config.yaml`` (resolved, secrets
hidden), ``overrides.yaml``, ``git.patch`` when the tree is dirty, ``environment/installed.txt`` (what
is installed, tag ``environment.digest``) and ``environment/lock.txt`` beside it (tags
``environment.lock_digest``, ``environment.matches_lock``), and on failure the
``failure_reason`` tag and ``error/traceback.txt``; with ``tracking.system_metrics``, MLflow's
``system/*`` metrics for the run's lifetime.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf

import pipeline.tracking.environment as environment
from pipeline.tracking.record import config_params, git_state, package_versions
from pipeline.tracking.scrub import (
    MAX_RUN_NAME_LENGTH,
    MAX_TAG_LENGTH,
    override_secrets,
    redacted,
    scrub,
    secret_values,
)


def config_secrets(cfg: DictConfig, overrides: Iterable[str] = ()) -> list[str]:
    """Values of the config's secret-looking keys and of secret overrides: scrubbed from every text
    written for the run. A config that does not resolve gives the overrides' alone."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        found = secret_values(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException:
        found = []
    return found + override_secrets(overrides)


@contextmanager
def job_run(
    cfg: DictConfig,
    experiment_id: str,
    run_name: str,
    overrides: list[str],
    tags: dict[str, str],
    run_id: str | None = None,
) -> Iterator[Any]:
    """Start the job's MLflow run, log its config, and end it FINISHED, FAILED or KILLED.

    An exception ends it FAILED with the reason as the ``failure_reason`` tag and the traceback as an
    artifact; Ctrl-C/SIGTERM ends it KILLED. ``run_id`` continues an existing run (``pipeline.resume``).
    """
    import mlflow

    secrets = config_secrets(cfg, overrides)
    git, packages = git_state(), environment.snapshot()
    run = _start(cfg, experiment_id, run_name, _start_tags(overrides, tags, git, secrets, packages), secrets, run_id)
    try:
        _log_config(run, cfg, overrides, git, secrets)
        _log_environment(packages)
        yield run
    except KeyboardInterrupt as error:
        reason = f"interrupted (Ctrl-C or SIGTERM){f': {error}' if str(error) else ''}"
        end_run(run.info.run_id, "KILLED", reason, secrets=secrets)
        raise
    except BaseException as error:
        end_run(run.info.run_id, "FAILED", f"{type(error).__name__}: {error}", traceback.format_exc(), secrets)
        raise
    else:
        mlflow.flush_async_logging()
        mlflow.end_run("FINISHED")


def _start_tags(
    overrides: list[str], tags: dict[str, str], git: dict[str, str], secrets: list[str], packages: environment.Snapshot
) -> dict[str, str]:
    """Package versions, the environment's digests, git state, the overrides and the caller's tags, scrubbed."""
    out = {
        **{f"version.{name}": version for name, version in package_versions().items()},
        "pipeline.overrides": scrub(" ".join(overrides), secrets, MAX_TAG_LENGTH),
        **{key: scrub(str(value), secrets, MAX_TAG_LENGTH) for key, value in tags.items()},
    }
    if git:
        out.update({"git.commit": git["commit"], "git.dirty": git["dirty"]})
    out.update(packages.tags)
    return out


def _start(
    cfg: DictConfig, experiment_id: str, run_name: str, tags: dict[str, str], secrets: list[str], run_id: str | None
):
    """A new run, or ``run_id`` again (RUNNING, the interruption's reason dropped)."""
    import mlflow

    system_metrics = _system_metrics(cfg.tracking)
    if not run_id:
        name = scrub(run_name, secrets, MAX_RUN_NAME_LENGTH)
        return mlflow.start_run(
            experiment_id=experiment_id, run_name=name, tags=tags, log_system_metrics=system_metrics
        )
    run = mlflow.start_run(run_id=run_id, tags=tags, log_system_metrics=system_metrics)
    if "failure_reason" in run.data.tags:  # from the interruption being resumed
        mlflow.MlflowClient().delete_tag(run_id, "failure_reason")
    return run


def _log_config(run, cfg: DictConfig, overrides: list[str], git: dict[str, str], secrets: list[str]) -> None:
    """Params, ``config.yaml`` (resolved, secrets hidden), ``overrides.yaml``, ``git.patch``."""
    import mlflow

    # a resumed run keeps the params it has: a config spelled differently for the same store (a
    # relative --tracking-uri, localhost for 127.0.0.1) is not a changed param
    mlflow.log_params({k: v for k, v in config_params(cfg).items() if k not in run.data.params})
    config_text = OmegaConf.to_yaml(redacted(OmegaConf.to_container(cfg, resolve=True)))
    mlflow.log_text(scrub(config_text, secrets), "config.yaml")
    mlflow.log_text(scrub(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), secrets), "overrides.yaml")
    if git.get("patch"):
        mlflow.log_text(scrub(git["patch"], secrets), "git.patch")


def _log_environment(packages: environment.Snapshot) -> None:
    """``environment/installed.txt`` (every package installed and Python, ``name==version``: what ran,
    and what ``pipeline.rerun`` compares) and ``environment/lock.txt`` (the lock this checkout installs from)."""
    import mlflow

    mlflow.log_text(packages.installed, "environment/installed.txt")
    if packages.lock is not None:
        mlflow.log_text(packages.lock, "environment/lock.txt")


def _system_metrics(tracking: DictConfig) -> bool:
    """``tracking.system_metrics``: MLflow samples CPU, memory, disk, network (and GPUs, with
    ``pynvml``) every ``tracking.system_metrics_interval`` seconds into ``system/*`` metrics while
    the run is open."""
    import mlflow

    if not tracking.system_metrics:
        return False
    mlflow.system_metrics.set_system_metrics_sampling_interval(float(tracking.system_metrics_interval))
    mlflow.system_metrics.set_system_metrics_samples_before_logging(1)
    return True


def end_run(
    run_id: str,
    status: str,
    reason: str | None = None,
    trace: str | None = None,
    secrets: Iterable[str] = (),
    tracking_uri: str | None = None,
) -> None:
    """End a run ``status`` with ``reason`` as its ``failure_reason`` tag (and ``trace`` as
    ``error/traceback.txt``), both scrubbed: the job's own active run, or any run by id."""
    import mlflow

    active = mlflow.active_run()
    mine = active is not None and active.info.run_id == run_id
    client = mlflow.MlflowClient(tracking_uri) if tracking_uri else mlflow.MlflowClient()
    try:
        if mine:
            mlflow.flush_async_logging()
        if reason:
            client.set_tag(run_id, "failure_reason", scrub(reason, secrets, MAX_TAG_LENGTH))
        if trace:
            client.log_text(run_id, scrub(trace, secrets), "error/traceback.txt")
    finally:
        if mine:
            mlflow.end_run(status)
        else:
            client.set_terminated(run_id, status)

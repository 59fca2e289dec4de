"""``python -m pipeline.resume RUN_ID [key=value ...] [--tracking-uri URI] [--force]``: continue an interrupted run.

Secrets the run logged as ``***`` are given again as ``key=value`` or in the environment
(``tracking.api_token`` -> ``PIPELINE_TRACKING_API_TOKEN``); one not given is used as ``***``, with a warning.

Reads the run's logged ``config.yaml`` and ``overrides.yaml``, finds its last committed checkpoint
under the ``checkpoint.dir`` tag (the run's own folder, ``<output dir>/<run id>/trainer``: another job
started beside it never wrote there), and trains on from there into the SAME MLflow run (its status goes
back to RUNNING, then FINISHED / FAILED / KILLED like any job). The trainer restores weights,
optimizer, scheduler, RNG states and the position in the data, so on CPU the resumed run ends with
the metrics an uninterrupted run with the same seed would have had. Writes to MLflow: the rest of
the run's metrics and artifacts, and a ``resumed_from`` tag.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipeline import PipelineError, tracking
from pipeline.cli import add_tracking_uri, parse_args, print_summary, reported, run_command, tracking_uri

log = logging.getLogger("pipeline.resume")


# A RUNNING run started on another host, with activity within this many minutes, may still be training.
STALE_AFTER_MIN = 10.0


def check_not_running(client, run, force: bool) -> None:
    """Refuse a run whose process still runs: resuming it would delete its in-flight checkpoint and
    train twice into one run. On this host the process is looked up by pid and start time; a run from
    another host counts as live until it shows no activity for ``STALE_AFTER_MIN`` minutes."""
    import time

    from pipeline.runs import last_activity_ms
    from pipeline.runtime.process_clock import owner_alive

    if force:
        return
    tags, run_id = run.data.tags, run.info.run_id
    alive = owner_alive(tags)
    if alive:
        raise PipelineError(
            f"run {run_id} is still running (process {tags['process.pid']} on {tags['process.host']}): let it "
            f"finish, or stop it (kill -TERM {tags['process.pid']} checkpoints and ends it KILLED) and resume then."
        )
    idle_min = (time.time() * 1000 - last_activity_ms(client, run)) / 60000
    if alive is None and run.info.status == "RUNNING" and idle_min < STALE_AFTER_MIN:
        raise PipelineError(
            f"run {run_id} is RUNNING on host {tags.get('process.host', 'unknown')} and was active "
            f"{idle_min:.0f} min ago: it may still be training. Resume it after {STALE_AFTER_MIN:g} min without "
            "activity, or pass --force if its process is gone."
        )


def secret_env(key: str) -> str:
    """``tracking.api_token`` -> ``PIPELINE_TRACKING_API_TOKEN``."""
    return "PIPELINE_" + key.upper().replace(".", "_").replace("-", "_")


def supply_secrets(cfg, secrets: list[str], environ) -> list[str]:
    """``key=value`` for each secret the run logged as ``***``: given on the command line, else from
    ``environ`` (:func:`secret_env`); a secret given neither way stays ``***``, and is said so."""
    hidden = tracking.hidden_keys(cfg)
    given = {item.split("=", 1)[0]: item for item in secrets}
    unknown = [key for key in given if "=" not in given[key] or key not in hidden]
    if unknown:
        raise PipelineError(
            f"{given[unknown[0]]!r}: resume continues the logged config; only its secrets (logged as ***) can "
            f"be given again, as key=value: {', '.join(hidden) or 'this run has none'}."
        )
    supplied = []
    for key in hidden:
        if key in given:
            supplied.append(given[key])
        elif environ.get(secret_env(key)):
            supplied.append(f"{key}={environ[secret_env(key)]}")
        else:
            log.warning(
                "%s was logged as ***, and the resumed run will use *** for it: give it again as %s=VALUE "
                "or in the environment as %s",
                key,
                key,
                secret_env(key),
            )
    return supplied


def resume(run_id: str, uri: str, force: bool = False, secrets: list[str] | None = None):
    """Continue ``run_id`` from its last checkpoint; return the job's result."""
    from mlflow.exceptions import MlflowException

    from pipeline.job import JobRequest, Resume
    from pipeline.logged_config import read_logged
    from pipeline.runtime import checkpoint
    from pipeline.start import start_job

    tracking.check_uri(uri)
    client = tracking.client(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PipelineError(
            f"run {run_id!r} is not in the store {uri!r}: check the id, or pass --tracking-uri."
        ) from None
    if run.info.status == "FINISHED":
        raise PipelineError(
            f"run {run_id} already FINISHED: nothing to resume (python -m pipeline.rerun {run_id} replays it)."
        )
    check_not_running(client, run, force)
    folder = run.data.tags.get("checkpoint.dir")
    last = checkpoint.latest_checkpoint(folder) if folder else None
    if last is None:
        raise PipelineError(
            f"run {run_id} has no committed checkpoint (checkpoint.dir={folder!r}): it stopped before its first "
            "save; start it again (training.save_strategy=steps training.save_steps=N makes checkpoints)."
        )
    cfg = tracking.logged_config(client, run_id, [])
    cfg = tracking.logged_config(client, run_id, supply_secrets(cfg, list(secrets or []), os.environ))
    cfg = read_logged(cfg, f"config.yaml of run {run_id}")  # older shapes and keys: today's, warned
    overrides = tracking.logged_list(client, run_id, "overrides.yaml")
    cfg.tracking.uri = uri
    choices = {"experiment": run.data.tags.get("pipeline.experiment", "none")}
    log.info("Resuming run %s from %s", run_id, last)
    client.set_tag(run_id, "resumed_from", str(last))
    target = Resume(run_id=run_id, checkpoint=str(last), fingerprint=run.data.tags.get("data.fingerprint"))
    return start_job(cfg, Path(folder).parent, JobRequest(overrides=overrides, choices=choices, resume=target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.resume", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run to continue")
    add_tracking_uri(parser)
    parser.add_argument(
        "secrets", nargs="*", metavar="key=value", help="secrets the run logged as *** (else $PIPELINE_<KEY>)"
    )
    parser.add_argument(
        "--force", action="store_true", help="resume even if the run's process looks alive (you know it is not)"
    )
    options = parse_args(parser, argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    from pipeline.runtime.checkpoint import install_signal_handlers

    install_signal_handlers()
    with reported():
        result = resume(options.run_id, tracking_uri(options), options.force, options.secrets)
    print_summary(result, "resumed")
    return 0


if __name__ == "__main__":
    run_command(main)

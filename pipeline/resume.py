"""``python -m pipeline.resume RUN_ID [--tracking-uri URI]``: continue an interrupted run.

Reads the run's logged ``config.yaml`` and ``overrides.yaml``, finds its last committed checkpoint
under the ``checkpoint.dir`` tag, and trains on from there into the SAME MLflow run (its status goes
back to RUNNING, then FINISHED / FAILED / KILLED like any job). The trainer restores weights,
optimizer, scheduler, RNG states and the position in the data, so on CPU the resumed run ends with
the metrics an uninterrupted run with the same seed would have had. Writes to MLflow: the rest of
the run's metrics and artifacts, and a ``resumed_from`` tag.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import PipelineError, tracking
from pipeline.cli import add_tracking_uri, print_summary, reported, run_command, tracking_uri

log = logging.getLogger("pipeline.resume")


def resume(run_id: str, uri: str):
    """Continue ``run_id`` from its last checkpoint; return the job's result."""
    from mlflow.exceptions import MlflowException

    from pipeline.job import Resume
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
    folder = run.data.tags.get("checkpoint.dir")
    last = checkpoint.latest_checkpoint(folder) if folder else None
    if last is None:
        raise PipelineError(
            f"run {run_id} has no committed checkpoint (checkpoint.dir={folder!r}): it stopped before its first "
            "save; start it again (training.save_strategy=steps training.save_steps=N makes checkpoints)."
        )
    cfg = tracking.logged_config(client, run_id, [])
    overrides = tracking.logged_list(client, run_id, "overrides.yaml")
    cfg.tracking.uri = uri
    choices = {"experiment": run.data.tags.get("pipeline.experiment", "none")}
    log.info("Resuming run %s from %s", run_id, last)
    client.set_tag(run_id, "resumed_from", str(last))
    target = Resume(run_id=run_id, checkpoint=str(last), fingerprint=run.data.tags.get("data.fingerprint"))
    return start_job(cfg, Path(folder).parent, overrides, choices, resume=target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.resume", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run to continue")
    add_tracking_uri(parser)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    from pipeline.runtime.checkpoint import install_signal_handlers

    install_signal_handlers()
    with reported():
        result = resume(options.run_id, tracking_uri(options))
    print_summary(result, "resumed")
    return 0


if __name__ == "__main__":
    run_command(main)

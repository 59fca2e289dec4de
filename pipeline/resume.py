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
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipeline import PipelineError, run_command, tracking

log = logging.getLogger("pipeline.resume")



def resume(run_id: str, tracking_uri: str):
    """Continue ``run_id`` from its last checkpoint; return the job's result."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline import checkpoint
    from pipeline.job import Resume, run_job
    from pipeline.tracking import check_target, logged_config, logged_list

    check_target(OmegaConf.create({"uri": tracking_uri}))
    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PipelineError(f"run {run_id!r} is not in the store {tracking_uri!r}: check the id, or pass --tracking-uri.") from None
    if run.info.status == "FINISHED":
        raise PipelineError(f"run {run_id} already FINISHED: nothing to resume (python -m pipeline.rerun {run_id} replays it).")
    folder = run.data.tags.get("checkpoint.dir")
    last = checkpoint.latest_checkpoint(folder) if folder else None
    if last is None:
        raise PipelineError(
            f"run {run_id} has no committed checkpoint (checkpoint.dir={folder!r}): it stopped before its first "
            "save; start it again (training.save_strategy=steps training.save_steps=N makes checkpoints)."
        )
    cfg = logged_config(client, run_id, [])
    overrides = logged_list(client, run_id, "overrides.yaml")
    cfg.tracking.uri = tracking_uri
    choices = {"experiment": run.data.tags.get("pipeline.experiment", "none")}
    log.info("Resuming run %s from %s", run_id, last)
    client.set_tag(run_id, "resumed_from", str(last))
    target = Resume(run_id=run_id, checkpoint=str(last), fingerprint=run.data.tags.get("data.fingerprint"))
    return run_job(cfg, Path(folder).parent, overrides, choices, resume=target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.resume", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="the MLflow run to continue")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the repo's mlruns/mlflow.db)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    from pipeline.checkpoint import install_signal_handlers

    install_signal_handlers()
    try:
        result = resume(options.run_id, options.tracking_uri or tracking.default_tracking_uri())
    except PipelineError as error:
        if os.environ.get("PIPELINE_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the MLflow run was ended KILLED", file=sys.stderr)
        return 130
    print(f"\nMLflow run {result.run_id} FINISHED (resumed)")
    for name in sorted(result.metrics):
        print(f"  {name:<40} {result.metrics[name]:.4f}")
    return 0


if __name__ == "__main__":
    run_command(main)

"""``python -m pipeline.runs mark-stale [--older-than MIN] [--tracking-uri URI] [--dry-run]``.

A process killed with SIGKILL (or a lost machine) leaves its MLflow run RUNNING. This marks every
RUNNING run with no activity for ``--older-than`` minutes (default 60; last metric, or start time)
FAILED with a ``failure_reason`` tag. Runs that can be continued are better resumed first:
``python -m pipeline.resume RUN_ID``. Writes to MLflow: status FAILED and the ``failure_reason`` tag.
"""

from __future__ import annotations

import argparse
import time

from pipeline.cli import add_tracking_uri, reported, run_command, tracking_uri
from pipeline.tracking import end_run


def stale_runs(client, older_than_min: float) -> list:
    """RUNNING runs of every experiment whose last sign of life is older than ``older_than_min``."""
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not experiments:
        return []
    cutoff_ms = (time.time() - older_than_min * 60) * 1000
    stale = []
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=50000):
        if last_activity_ms(client, run) <= cutoff_ms:
            stale.append(run)
    return stale


def last_activity_ms(client, run) -> int:
    """The run's last sign of life (its latest metric, or its start), epoch milliseconds."""
    return max([run.info.start_time or 0] + [m.timestamp for m in _latest_metrics(client, run)])


def _latest_metrics(client, run) -> list:
    return [client.get_metric_history(run.info.run_id, key)[-1] for key in list(run.data.metrics)[:5]]


def mark_stale(client, older_than_min: float, dry_run: bool = False) -> list[str]:
    ids = []
    for run in stale_runs(client, older_than_min):
        ids.append(run.info.run_id)
        if not dry_run:
            reason = f"stale: RUNNING with no activity for {older_than_min:g}+ min (process lost)"
            end_run(run.info.run_id, "FAILED", reason, tracking_uri=client.tracking_uri)
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.runs", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    stale = commands.add_parser("mark-stale", help="mark RUNNING runs with no recent activity FAILED")
    stale.add_argument(
        "--older-than", type=float, default=60.0, metavar="MIN", help="minutes without activity (default 60)"
    )
    add_tracking_uri(stale)
    stale.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    options = parser.parse_args(argv)

    from pipeline import tracking

    with reported():
        uri = tracking_uri(options)
        tracking.check_uri(uri)
        ids = mark_stale(tracking.client(uri), options.older_than, options.dry_run)
    verb = "would mark" if options.dry_run else "marked"
    print(f"{verb} {len(ids)} stale RUNNING run(s) FAILED" + "".join(f"\n  {i}" for i in ids))
    return 0


if __name__ == "__main__":
    run_command(main)

"""``python -m pipeline.compare``: runs of an experiment, or the children of a sweep, as one table.

One row per run: its name, status, the params that differ between the runs and the key metrics
(the optimized metric first, then the evaluators' final metrics, the final training loss and the
job's seconds), sorted by ``optimized_metric`` (best first). Reads MLflow only; writes nothing to it
(the sweep's parent run gets the same table as its ``leaderboard`` artifact: ``pipeline.tracking.leaderboard``).

    python -m pipeline.compare --experiment example
    python -m pipeline.compare --parent RUN_ID --format markdown --plot sweep.png
    python -m pipeline.compare --parent RUN_ID --group-by seed     # mean, std and n over seeds
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import PipelineError, tracking
from pipeline.cli import add_tracking_uri, parse_args, reported, run_command, tracking_uri
from pipeline.tracking.leaderboard import compare_url, grouped, markdown, plot, ranked_by, search, table

FORMATS = ("table", "csv", "markdown")


def _experiment_ids(client, name: str | None, parent: str | None) -> list[str]:
    from mlflow.exceptions import MlflowException

    if parent:
        try:
            return [client.get_run(parent).info.experiment_id]
        except MlflowException:
            raise PipelineError(
                f"--parent {parent}: no such run in this store: copy the parent run id from the sweep's output or the MLflow UI."
            ) from None
    experiments = [
        e
        for e in client.search_experiments()
        if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)
    ]
    names = ", ".join(sorted(e.name for e in experiments)) or "none"
    if name:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise PipelineError(f"--experiment {name!r} does not exist in this store (experiments: {names}).")
        return [found.experiment_id]
    if len(experiments) == 1:
        return [experiments[0].experiment_id]
    raise PipelineError(f"say which runs: --experiment NAME or --parent RUN_ID (experiments here: {names}).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.split("\n\n")[0])
    add_tracking_uri(parser)
    parser.add_argument("--experiment", help="every run of this experiment (sweep parents left out)")
    parser.add_argument("--parent", help="the child runs of this sweep parent run")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--metric", help="rank by this metric, e.g. ir-dev_cosine_ndcg@10 (default: the runs' optimized_metric)"
    )
    parser.add_argument("--ascending", action="store_true", help="lower is better")
    parser.add_argument(
        "--plot", type=Path, help="also write a bar chart of the key metrics to this file (.png, .svg, .pdf)"
    )
    parser.add_argument(
        "--group-by",
        metavar="KEY",
        help="fold runs that differ only in this param (e.g. seed) into one row: mean, std and n of each metric",
    )
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.WARNING)
    with reported():
        uri = tracking_uri(args)
        tracking.check_uri(uri)
        experiment_ids = _experiment_ids(tracking.client(uri), args.experiment, args.parent)
        runs = search(uri, experiment_ids, args.parent)
        if runs.empty:
            raise PipelineError("no runs found: check --experiment / --parent and --tracking-uri.")
        frame = table(runs, args.metric, args.ascending)
        if args.group_by:
            frame = grouped(frame, args.group_by, args.metric or ranked_by(runs), args.ascending)
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "markdown":
        sys.stdout.write(markdown(frame))
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.plot:
        plot(frame, args.metric or ranked_by(runs), args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.parent:
        print(f"side by side in MLflow: {compare_url(uri, experiment_ids[0], list(runs['run_id']))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_command(main)

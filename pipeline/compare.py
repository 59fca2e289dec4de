"""``python -m pipeline.compare``: runs of an experiment, or the children of a sweep, as one table; or two
runs metric by metric, each difference with its 95% confidence interval.

One row per run: its name, status, the params that differ between the runs and the key metrics
(the optimized metric first, then the evaluators' final metrics, the final training loss and the
job's seconds), sorted by ``optimized_metric`` (best first). Reads MLflow only; writes nothing to it
(the sweep's parent run gets the same table as its ``leaderboard`` artifact: ``pipeline.tracking.leaderboard``).

    python -m pipeline.compare --experiment example
    python -m pipeline.compare --parent RUN_ID --format markdown --plot sweep.png
    python -m pipeline.compare --parent RUN_ID --group-by seed     # mean, std and n over seeds, vs the best
    python -m pipeline.compare --runs RUN_A RUN_B                  # B - A per metric, interval, p-value

``--runs A B``: per final metric both runs logged per-item scores for (``items/*.parquet``): A, B,
delta = B - A, its 95% paired-bootstrap percentile interval (``ci_low``, ``ci_high``: the same resampled
items on both sides, ``--resamples`` of them, ``--seed``), the two-sided paired-bootstrap p-value (twice
the smaller share of resampled differences beyond 0) and ``p_holm``, Holm's correction over the metrics
compared. ``--parent`` / ``--experiment``: each run's difference from the best run on the ranking metric,
its interval and ``tied`` where the interval holds 0; with ``--group-by seed`` each configuration's,
its interval by a two-level bootstrap (seeds, then items).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import PipelineError, tracking
from pipeline.cli import add_tracking_uri, parse_args, reported, run_command, tracking_uri
from pipeline.tracking import comparison
from pipeline.tracking.leaderboard import (
    compare_url,
    grouped,
    markdown,
    plot,
    ranked_by,
    search,
    table,
    with_intervals,
)

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
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.compare",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_tracking_uri(parser)
    parser.add_argument("--experiment", help="every run of this experiment (sweep parents left out)")
    parser.add_argument("--parent", help="the child runs of this sweep parent run")
    parser.add_argument(
        "--runs",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="two runs metric by metric: B - A, its 95%% paired-bootstrap interval, p-value (paired bootstrap) "
        "and Holm's correction over the metrics",
    )
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument(
        "--metric", help="rank by this metric, e.g. ir-dev_cosine_ndcg@10 (default: the runs' optimized_metric)"
    )
    parser.add_argument("--ascending", action="store_true", help="lower is better")
    parser.add_argument(
        "--plot",
        type=Path,
        help="also write a plot to this file (.png, .svg, .pdf): a forest plot of the intervals with --runs or "
        "--group-by seed, else a bar chart of the key metrics",
    )
    parser.add_argument(
        "--group-by",
        metavar="KEY",
        help="fold runs that differ only in this param (e.g. seed) into one row: mean, std and n of each metric",
    )
    parser.add_argument(
        "--resamples", type=int, default=10_000, help="bootstrap resamples for the intervals (default 10000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed (default 0)")
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.WARNING)
    if args.runs:
        return _paired(args)
    with reported():
        uri = tracking_uri(args)
        tracking.check_uri(uri)
        experiment_ids = _experiment_ids(tracking.client(uri), args.experiment, args.parent)
        runs = search(uri, experiment_ids, args.parent)
        if runs.empty:
            raise PipelineError("no runs found: check --experiment / --parent and --tracking-uri.")
        frame = table(runs, args.metric, args.ascending)
        metric = args.metric or ranked_by(runs)
        if args.group_by:
            frame = grouped(frame, args.group_by, metric, args.ascending)
        frame = with_intervals(frame, tracking.client(uri), metric, args.resamples, args.seed, args.ascending)
    _print(frame.drop(columns=["run_ids"]) if args.format == "table" and "run_ids" in frame else frame, args.format)
    if frame.attrs.get("intervals"):
        print(_note(args, f"each row's difference from the best on {frame.attrs['metric']}", "rows"), file=sys.stderr)
    if args.plot and frame.attrs.get("intervals"):
        comparison.forest(list(frame.attrs["intervals"].items()), args.plot, frame.attrs["metric"], "the best")
        print(f"plot: {args.plot}", file=sys.stderr)
    elif args.plot:
        plot(frame, args.metric or ranked_by(runs), args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.parent:
        print(f"side by side in MLflow: {compare_url(uri, experiment_ids[0], list(runs['run_id']))}", file=sys.stderr)
    return 0


def _paired(args) -> int:
    """``--runs A B``: the paired comparison, printed in ``--format``, with how it was computed."""
    with reported():
        if args.resamples < 100:
            raise PipelineError(
                f"--resamples {args.resamples}: too few for a 95% interval; use 100 or more (default 10000)."
            )
        uri = tracking_uri(args)
        tracking.check_uri(uri)
        frame = comparison.paired_runs(tracking.client(uri), *args.runs, args.resamples, args.seed)
    _print(frame, args.format)
    print(_note(args, "delta = B - A", "metrics"), file=sys.stderr if args.format == "csv" else sys.stdout)
    if args.plot:
        rows = [(row.metric, comparison.Difference(row.a, row.b, row.delta, row.ci_low, row.ci_high, row.p_value))
                for row in frame.itertuples()]  # fmt: skip
        comparison.forest(rows, args.plot, f"{args.runs[1]} - {args.runs[0]}", "run A")
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def _note(args, what: str, over: str) -> str:
    return (
        f"{what}; [ci_low, ci_high]: 95% paired-bootstrap percentile interval over the evaluated items "
        f"({args.resamples} resamples, seed {args.seed}); p_value: {comparison.P_VALUE}; "
        f"p_holm: Holm's correction over the {over} compared."
    )


def _print(frame, form: str) -> None:
    if form == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif form == "markdown":
        sys.stdout.write(markdown(frame))
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    run_command(main)

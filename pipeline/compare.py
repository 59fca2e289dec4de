"""``python -m pipeline.compare``: runs of an experiment, or the children of a sweep, as one table.

One row per run: its name, status, the params that differ between the runs and the key metrics
(the optimized metric first, then the evaluators' final metrics, the final training loss and the
job's seconds), sorted by ``optimized_metric`` (best first). Reads MLflow only; writes nothing to it
(the sweep's parent run gets the same table as its ``leaderboard`` artifact, see ``pipeline.sweep``).

    python -m pipeline.compare --experiment example
    python -m pipeline.compare --parent RUN_ID --format markdown --plot sweep.png
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from pipeline import PipelineError, run_command, tracking

log = logging.getLogger(__name__)

# Final evaluator metrics: "{evaluator}-{split}_{metric}" (the trainer's eval_ copies excluded).
EVALUATOR_METRIC = re.compile(r"^(?!eval_)[^-]+-[^_]+_.+$")
EXTRA_METRICS = ("train_loss", "job_seconds")
FORMATS = ("table", "csv", "markdown")


def search(tracking_uri: str, experiment_ids: list[str], parent: str | None = None):
    """The job runs (a DataFrame from ``mlflow.search_runs``): the children of ``parent``, or every
    run of the experiments except sweep parents."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    query = f"tags.`mlflow.parentRunId` = '{parent}'" if parent else ""
    runs = mlflow.search_runs(experiment_ids=experiment_ids, filter_string=query, output_format="pandas")
    if "tags.pipeline.role" in runs:
        runs = runs[runs["tags.pipeline.role"] != "sweep"]
    return runs.reset_index(drop=True)


def table(runs, optimized_metric: str | None = None, ascending: bool = False):
    """One row per run: name, status, differing params, key metrics; best ``optimized_metric`` first.

    Args:
        runs: ``mlflow.search_runs`` output.
        optimized_metric: the ranking metric; None: the runs' own ``optimized_metric`` param.
        ascending: lower is better (an Optuna sweep with ``direction: minimize``).
    """
    import pandas as pd

    optimized_metric = optimized_metric or ranked_by(runs)
    params = [c for c in runs.columns if c.startswith("params.") and runs[c].nunique(dropna=True) > 1]
    metric_names = [c[len("metrics."):] for c in runs.columns if c.startswith("metrics.")]
    key = [m for m in metric_names if EVALUATOR_METRIC.match(m)]
    if optimized_metric in key:
        key.remove(optimized_metric)
    key = ([optimized_metric] if optimized_metric else []) + sorted(key) + [m for m in EXTRA_METRICS if m in metric_names]
    out = pd.DataFrame({
        "run": runs.get("tags.mlflow.runName", runs["run_id"]),
        "run_id": runs["run_id"],
        "status": runs["status"],
    })
    for column in params:
        out[column[len("params."):]] = runs[column]
    for name in key:
        out[name] = runs[f"metrics.{name}"] if f"metrics.{name}" in runs else float("nan")
    if optimized_metric:
        out = out.sort_values(optimized_metric, ascending=ascending, na_position="last", kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.reset_index(drop=True)


def markdown(frame) -> str:
    """A GitHub-flavoured markdown table (pandas' ``to_markdown`` needs ``tabulate``, not installed)."""
    def cell(value) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot(frame, optimized_metric: str | None, path: Path, title: str = "") -> Path:
    """Horizontal bars, one group per run (best on top): the key evaluator metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in frame.columns if EVALUATOR_METRIC.match(str(c)) and frame[c].notna().any()]
    if optimized_metric in frame and optimized_metric not in metrics:
        metrics.insert(0, optimized_metric)
    data = frame.set_index("run")[metrics].iloc[::-1] if metrics else None
    height = 1.5 + 0.35 * max(1, len(frame)) * max(1, min(len(metrics), 4))
    fig, ax = plt.subplots(figsize=(9, min(height, 40)))
    if data is not None and len(data):
        data.plot.barh(ax=ax)
        ax.set_xlabel("value")
        ax.legend(loc="lower right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no metrics to compare", ha="center", va="center")
    ax.set_title(title or f"runs ranked by {optimized_metric}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _experiment_ids(client, name: str | None, parent: str | None) -> list[str]:
    from mlflow.exceptions import MlflowException

    if parent:
        try:
            return [client.get_run(parent).info.experiment_id]
        except MlflowException:
            raise PipelineError(f"--parent {parent}: no such run in this store: copy the parent run id from the sweep's output or the MLflow UI.") from None
    experiments = [e for e in client.search_experiments() if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)]
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
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or the repo's mlruns/mlflow.db)")
    parser.add_argument("--experiment", help="every run of this experiment (sweep parents left out)")
    parser.add_argument("--parent", help="the child runs of this sweep parent run")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--metric", help="rank by this metric (default: the runs' optimized_metric)")
    parser.add_argument("--ascending", action="store_true", help="lower is better")
    parser.add_argument("--plot", type=Path, help="also write a bar chart of the key metrics to this file (.png, .svg, .pdf)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        import mlflow

        uri = args.tracking_uri or tracking.default_tracking_uri()
        client = mlflow.MlflowClient(uri)
        runs = search(uri, _experiment_ids(client, args.experiment, args.parent), args.parent)
        if runs.empty:
            raise PipelineError("no runs found: check --experiment / --parent and --tracking-uri.")
        frame = table(runs, args.metric, args.ascending)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "markdown":
        sys.stdout.write(markdown(frame))
    else:
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.plot:
        plot(frame, args.metric or ranked_by(runs), args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def ranked_by(runs) -> str | None:
    """The runs' ``optimized_metric`` param (the most common value)."""
    if "params.optimized_metric" in runs and runs["params.optimized_metric"].notna().any():
        return str(runs["params.optimized_metric"].mode().iloc[0])
    return None


if __name__ == "__main__":
    run_command(main)

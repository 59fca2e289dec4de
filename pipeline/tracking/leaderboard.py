"""Runs side by side: the table behind ``pipeline.compare`` and a sweep's leaderboard.

One row per run: its name, status, the params that differ between the runs and the key metrics
(the optimized metric first, then the evaluators' final metrics, the final training loss and the
job's seconds), sorted by ``optimized_metric`` (best first). A run that logged ``baseline/`` metrics
(its starting model) also shows the optimized metric's change over it (``... delta``). Reads MLflow only.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.tracking.scrub import metric_key

# Final evaluator metrics: "{evaluator}-{split}_{metric}" (the trainer's eval_ copies excluded).
EVALUATOR_METRIC = re.compile(r"^(?!eval_|baseline/)[^-]+-[^_]+_.+$")
BASELINE = "baseline/"
EXTRA_METRICS = ("train_loss", "job_seconds")


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
    optimized_metric = metric_key(optimized_metric) if optimized_metric else None
    params = [c for c in runs.columns if c.startswith("params.") and runs[c].nunique(dropna=True) > 1]
    metric_names = [c[len("metrics.") :] for c in runs.columns if c.startswith("metrics.")]
    key = [m for m in metric_names if EVALUATOR_METRIC.match(m)]
    if optimized_metric in key:
        key.remove(optimized_metric)
    key = (
        ([optimized_metric] if optimized_metric else []) + sorted(key) + [m for m in EXTRA_METRICS if m in metric_names]
    )
    out = pd.DataFrame(
        {
            "run": runs.get("tags.mlflow.runName", runs["run_id"]),
            "run_id": runs["run_id"],
            "status": runs["status"],
        }
    )
    for column in params:
        out[column[len("params.") :]] = runs[column]
    for name in key:
        out[name] = runs[f"metrics.{name}"] if f"metrics.{name}" in runs else float("nan")
    if optimized_metric and f"metrics.{BASELINE}{optimized_metric}" in runs and optimized_metric in out:
        change = out[optimized_metric] - runs[f"metrics.{BASELINE}{optimized_metric}"]
        out.insert(out.columns.get_loc(optimized_metric) + 1, f"{optimized_metric} delta", change)
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


def ranked_by(runs) -> str | None:
    """The runs' ``optimized_metric`` param (the most common value)."""
    if "params.optimized_metric" in runs and runs["params.optimized_metric"].notna().any():
        return str(runs["params.optimized_metric"].mode().iloc[0])
    return None

"""Runs side by side: the table behind ``pipeline.compare`` and a sweep's leaderboard.

One row per run: its name, status, the params that differ between the runs and the key metrics
(the optimized metric first, then the evaluators' final metrics, the final training loss and the
job's seconds), sorted by ``optimized_metric`` (best first). A run that logged ``baseline/`` metrics
(its starting model) also shows the optimized metric's change over it (``... delta``). Reads MLflow only.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pipeline.tracking.grouping as grouping
from pipeline import PipelineError
from pipeline.tracking.intervals import spelled
from pipeline.tracking.scrub import metric_key, metric_name, redact

# Final evaluator metrics: "{evaluator}-{split}_{metric}" (the trainer's eval_ copies excluded).
EVALUATOR_METRIC = re.compile(r"^(?!eval_|baseline/)[^-]+-[^_]+_.+$")
BASELINE = "baseline/"
EXTRA_METRICS = ("train_loss", "job_seconds")
LOCAL_UI = "http://127.0.0.1:5000"  # where ``store.ui_command`` serves a local store
BOOKKEEPING = ("rank", "run", "run_id", "status", "run_ids")


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
        optimized_metric: the ranking metric (sentence-transformers' name or MLflow's); None: the runs'
            own ``optimized_metric`` param.
        ascending: lower is better (an Optuna sweep with ``direction: minimize``).
    """
    import pandas as pd

    optimized_metric = optimized_metric or ranked_by(runs)
    optimized_metric = metric_key(optimized_metric) if optimized_metric else None
    params = [c for c in runs.columns if c.startswith("params.") and runs[c].nunique(dropna=False) > 1]
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
        key = [*key, f"{optimized_metric} delta"]  # a metric too: folded (mean, std) with the others
    if optimized_metric:
        out = out.sort_values(optimized_metric, ascending=ascending, na_position="last", kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    out = out.reset_index(drop=True)
    out.attrs["metrics"] = key  # which columns are metrics (the rest: bookkeeping and params)
    return out


def grouped(frame, key: str, optimized_metric: str | None = None, ascending: bool = False):
    """Fold the rows of :func:`table` that are the same configuration (:mod:`pipeline.tracking.grouping`:
    they differ only in ``key``, a seed, and params that always equal it, such as ``training.seed``) into
    one row each: the other differing params, ``n`` (finished runs folded), the mean and std of every
    metric and the folded ``run_ids``; best mean of ``optimized_metric`` (either spelling:
    :func:`~pipeline.tracking.scrub.metric_key`) first. Unfinished runs are left out.

    Raises:
        PipelineError: ``key`` is not a param that differs between the runs.
    """
    import pandas as pd

    optimized_metric = metric_key(optimized_metric) if optimized_metric else None
    metrics = list(frame.attrs.get("metrics") or [c for c in frame.columns if _is_metric(c)])
    params = [c for c in frame.columns if c not in BOOKKEEPING and c not in metrics]
    if key not in params:
        raise PipelineError(
            f"--group-by {key}: not a param that differs between these runs; pick one of the swept keys "
            f"({', '.join(params) or 'none'})."
        )
    # one rule for every command (pipeline.tracking.grouping): the key and its copies are what is folded
    configs = grouping.configurations([{p: row[p] for p in params} for _, row in frame.iterrows()], key)
    params = [name for name, _ in configs[0]]
    finished = frame[frame["status"] == "FINISHED"]
    configs = [c for c, done in zip(configs, frame["status"] == "FINISHED") if done]
    rows = []
    for config in dict.fromkeys(configs):
        group = finished[[c == config for c in configs]]
        values = dict(config)
        row = {"run": " ".join(f"{p}={v}" for p, v in values.items()) or "all", **values}
        row["n"] = len(group)
        for name in metrics:
            row[name] = group[name].mean()
            row[f"{name}_std"] = group[name].std()
        row["run_ids"] = " ".join(group["run_id"])
        rows.append(row)
    out = pd.DataFrame(rows, columns=["run", *params, "n", *[c for m in metrics for c in (m, f"{m}_std")], "run_ids"])
    if optimized_metric in out:
        out = out.sort_values(optimized_metric, ascending=ascending, na_position="last", kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.reset_index(drop=True)


def _is_metric(column: str) -> bool:
    return bool(EVALUATOR_METRIC.match(column)) or column in EXTRA_METRICS


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

    optimized_metric = metric_key(optimized_metric) if optimized_metric else None
    metrics = [
        c
        for c in frame.columns
        if EVALUATOR_METRIC.match(str(c)) and not str(c).endswith("_std") and frame[c].notna().any()
    ]
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


def compare_url(tracking_uri: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's own compare page for ``run_ids``: params side by side, a parallel coordinates plot.

    On a tracking server, its address; on a local store, the UI that ``ui_command`` starts."""
    from pipeline.tracking.store import is_server

    base = redact(tracking_uri).rstrip("/") if is_server(tracking_uri) else LOCAL_UI
    runs = urllib.parse.quote(json.dumps(list(run_ids), separators=(",", ":")))
    experiments = urllib.parse.quote(json.dumps([experiment_id], separators=(",", ":")))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"


def ranked_by(runs) -> str | None:
    """The runs' ``optimized_metric`` param (the most common value)."""
    if "params.optimized_metric" not in runs:
        return None
    named = runs["params.optimized_metric"].dropna()
    named = named[named != "None"]  # evaluators=[]: no metric
    return str(named.mode().iloc[0]) if len(named) else None


def with_intervals(board, client, optimized_metric: str | None, resamples: int, seed: int = 0, ascending: bool = False):
    """``board`` (:func:`table` or :func:`grouped`, best first) with each row's difference from the best row
    on ``optimized_metric``, its 95% interval (:func:`pipeline.tracking.comparison.leaderboard_intervals`: paired
    bootstrap over the items; over seeds and items for a configuration of several seeds), its p-value,
    Holm's correction over the rows, and ``tied`` (the interval holds 0: not distinguishable from the
    best). Unchanged when the runs logged no items for the metric."""
    import pipeline.tracking.comparison as comparison
    import pipeline.tracking.intervals as intervals

    stored = metric_key(optimized_metric) if optimized_metric else None
    if stored not in board or board[stored].isna().all():
        return board
    rows = board[board[stored].notna() & (board["status"] == "FINISHED" if "status" in board else True)]
    ids = rows["run_ids"].str.split() if "run_ids" in rows else rows["run_id"].map(lambda r: [r])
    groups = {str(index): list(run_ids) for index, run_ids in ids.items()}
    best = str(rows[stored].idxmin() if ascending else rows[stored].idxmax())
    with_baseline = f"{stored} delta" in board
    computed = comparison.leaderboard_intervals(
        client, groups, best, metric_name(stored), resamples, seed, with_baseline
    )
    found = computed.against_best
    if not found:
        return board
    out = board.copy()
    name = f"{metric_name(stored)} vs best"
    adjusted = dict(zip(found, intervals.holm([d.p_value for d in found.values()])))

    def column(value) -> list:  # one value per row; NaN for a row not compared
        return [value(found[str(i)], str(i)) if str(i) in found else float("nan") for i in out.index]

    out[name] = column(lambda d, _: d.delta)
    out["ci_low"], out["ci_high"] = column(lambda d, _: d.low), column(lambda d, _: d.high)
    out["p_value"], out["p_holm"] = column(lambda d, _: d.p_value), column(lambda _, k: adjusted[k])
    out["tied"] = ["best" if str(i) == best else _tie(found.get(str(i))) for i in out.index]
    _baseline_intervals(out, stored, computed.against_baseline)
    labels = {k: str(out.loc[int(k), "run"]) for k in found}
    out.attrs.update(board.attrs, intervals={labels[k]: d for k, d in found.items()}, metric=name, best=labels[best])
    return out


def _baseline_intervals(out, stored: str, found: dict) -> None:
    """``delta_ci_low`` / ``delta_ci_high`` after the ``METRIC delta`` column (the change from the baseline):
    its interval, per row (over seeds too, for a configuration of several)."""
    column = f"{stored} delta"
    if column not in out or not any(found.values()):
        return
    at = out.columns.get_loc(column) + 1
    nan = float("nan")
    out.insert(at, "delta_ci_low", [found[str(i)].low if found.get(str(i)) else nan for i in out.index])
    out.insert(at + 1, "delta_ci_high", [found[str(i)].high if found.get(str(i)) else nan for i in out.index])


def _tie(difference) -> str:
    if difference is None:
        return ""
    return "no" if difference.excludes_zero() else "tied"


def closing_lines(board) -> str:
    """The sweep's closing lines: each row against the best, with its interval and whether it is tied."""
    lines = [
        f"vs the best on {board.attrs['metric'].removesuffix(' vs best')} "
        "(95% bootstrap interval over items, and seeds where folded; tied: not distinguishable from the best):"
    ]
    for label, difference in board.attrs["intervals"].items():
        verdict = "best" if label == board.attrs["best"] else _tie(difference)
        lines.append(f"  {label}: {spelled(difference)} {verdict}")
    return "\n".join(lines)

"""Differences between runs with their intervals, from the runs' per-item scores (``pipeline.tracking.items``):
two runs metric by metric, a run against its starting model, configurations against the best one, a
challenger against the holder of an alias; and the forest plot that draws them. Reads MLflow only.

Every interval is the 95% percentile interval of a paired bootstrap over the evaluated items
(:mod:`pipeline.tracking.intervals`); with several seeds per configuration, of a two-level bootstrap
(seeds, then items). A difference whose items are missing (a run logged none) has no interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import pipeline.tracking.intervals as intervals
import pipeline.tracking.items as items
from pipeline import PipelineError
from pipeline.tracking.intervals import Difference

COLUMNS = ("metric", "a", "b", "delta", "ci_low", "ci_high", "p_value", "p_holm")
IN_JOB_RESAMPLES = 2000  # inside every job (the summary's baseline deltas) and at a sweep's end
P_VALUE = "paired bootstrap (two-sided: twice the smaller share of resampled differences beyond 0)"


def get_run(client, run_id: str, option: str = "--runs"):
    from mlflow.exceptions import MlflowException

    if not run_id or not run_id.strip():
        raise PipelineError(f"{option}: an empty run id: pass the id of a run in this store.")
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise PipelineError(
            f"{option} {run_id}: no such run in this store: copy the run id from the MLflow UI."
        ) from None


def paired_runs(client, run_a: str, run_b: str, resamples: int, seed: int):
    """Per final metric both runs give items for: A, B, B - A, its interval, p-value and Holm-adjusted
    p-value (over the metrics compared), as a DataFrame with :data:`COLUMNS`."""
    import pandas as pd

    get_run(client, run_a), get_run(client, run_b)
    a, b = items.of_run(client, run_a), items.of_run(client, run_b)
    shared = sorted(set(a) & set(b))
    if not shared:
        have = f"{len(a)} and {len(b)} metrics with items"
        raise PipelineError(
            f"runs {run_a} and {run_b} share no metric with per-item scores ({have}, artifacts items/*.parquet): "
            "compare runs whose final evaluation logged them."
        )
    for name in shared:
        items.check_aligned(name, a[name], b[name], (run_a, run_b))
    found = _paired_by_file({name: (a[name], b[name]) for name in shared}, resamples, seed)
    rows = [[name, d.a, d.b, d.delta, d.low, d.high, d.p_value] for name, d in found.items()]
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame["p_holm"] = intervals.holm(list(frame["p_value"]))
    return frame


def from_baseline(client, run, resamples: int = IN_JOB_RESAMPLES, seed: int = 0) -> dict[str, Difference]:
    """Each final metric against the run's starting model (``items/baseline/``), on the same items."""
    final = items.of_run(client, run.info.run_id)
    base = items.baseline_of_run(client, run) if final else {}
    shared = [n for n in sorted(set(final) & set(base)) if final[n].items.size == base[n].items.size]
    return _paired_by_file({name: (base[name], final[name]) for name in shared}, resamples, seed)


def _paired_by_file(pairs: dict[str, tuple], resamples: int, seed: int) -> dict[str, Difference]:
    """B - A for each metric (``pairs``: name -> (A's, B's) :class:`~pipeline.tracking.items.Scored`),
    the metrics of one items file on one set of resamples."""
    by_file: dict[str, list[str]] = {}
    for name, (_, b) in pairs.items():
        by_file.setdefault(b.file, []).append(name)
    out = {}
    for names in by_file.values():
        found = intervals.paired_many([(pairs[n][0].items, pairs[n][1].items) for n in names], resamples, seed)
        out.update(zip(names, found))
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Board:
    """A leaderboard's intervals: each configuration against the best, and against its starting model."""

    against_best: dict[str, Difference]  # {} when a run has no items for the metric or the runs' items differ
    against_baseline: dict[str, Difference | None]  # None: no baseline items of that size for the configuration


def leaderboard_intervals(
    client,
    groups: dict[str, list[str]],
    best: str,
    metric: str,
    resamples: int = IN_JOB_RESAMPLES,
    seed: int = 0,
    baseline: bool = True,
) -> Board:
    """Each group of runs (a configuration: its seeds' run ids) against ``best`` on ``metric`` (the two-level
    bootstrap over seeds and items) and, with ``baseline``, against its starting models (the paired
    bootstrap for one run, the two-level one for several). Each run's items are read once, and every
    distinct items column is scored once on one set of resamples: a run's metric on a resample depends on
    its own items alone, so the intervals are exactly those of
    :func:`~pipeline.tracking.intervals.versus_best` and :func:`~pipeline.tracking.intervals.paired`
    called one comparison at a time with the same seed (groups and their runs in the same order)."""
    finals = {
        label: [items.of_run(client, run_id).get(metric) for run_id in run_ids] for label, run_ids in groups.items()
    }
    if any(f is None for found in finals.values() for f in found):
        return Board({}, {})
    first = finals[best][0]
    try:
        for label, found in finals.items():
            for run_id, run in zip(groups[label], found):
                items.check_aligned(metric, first, run, (groups[best][0], run_id))
    except PipelineError:
        return Board({}, {})
    bases = {
        label: _baselines(client, groups[label], found, metric) if baseline else None for label, found in finals.items()
    }
    columns: list[intervals.Items] = []
    finals_at = {label: [_column(columns, f.items) for f in found] for label, found in finals.items()}
    bases_at = {label: [_column(columns, b) for b in found] if found else None for label, found in bases.items()}
    values = intervals.on_resamples(columns, resamples, seed)
    configs = {label: [f.items for f in found] for label, found in finals.items()}
    per_run = values[:, [k for label in configs for k in finals_at[label]]]
    board = intervals.versus_best_on(configs, per_run, best, seed)
    return Board(
        board, {label: _from_baseline(columns, values, finals_at[label], bases_at[label], seed) for label in groups}
    )


def _baselines(client, run_ids: list[str], finals: list, metric: str) -> list[intervals.Items] | None:
    """The starting models' items of the runs (their own, or their baseline's source run's), None when one
    has none of the finals' size."""
    out = []
    for run_id, final in zip(run_ids, finals):
        base = items.baseline_of_run(client, client.get_run(run_id)).get(metric)
        if base is None or base.items.size != final.items.size:
            return None
        out.append(base.items)
    return out


def _column(columns: list[intervals.Items], found: intervals.Items) -> int:
    """Where ``found`` is among ``columns`` (the same statistic over equal values: a reused baseline's
    items, copied into every run), appended when new."""
    for k, known in enumerate(columns):
        if known.statistic == found.statistic and all(map(np.array_equal, known.columns, found.columns)):
            return k
    columns.append(found)
    return len(columns) - 1


def _from_baseline(columns, values, finals: list[int], bases: list[int] | None, seed: int) -> Difference | None:
    """The runs' metric (their mean, for several seeds) against their starting models' (as columns of
    ``values``): what :func:`~pipeline.tracking.intervals.paired` or ``versus_best`` gives alone."""
    if bases is None:
        return None
    if len(finals) == 1:
        return intervals.paired_on(columns[bases[0]], columns[finals[0]], values[:, bases[0]], values[:, finals[0]])
    configs = {"baseline": [columns[k] for k in bases], "trained": [columns[k] for k in finals]}
    return intervals.versus_best_on(configs, values[:, bases + finals], "baseline", seed)["trained"]


def challenge(client, holder: str, challenger: str, metric: str, resamples: int, seed: int) -> Difference:
    """The challenger's run against the holder's on ``metric``, on the same items (paired bootstrap)."""
    a, b = items.of_run(client, holder).get(metric), items.of_run(client, challenger).get(metric)
    for run_id, found in ((holder, a), (challenger, b)):
        if found is None:
            raise PipelineError(
                f"run {run_id} has no per-item scores for {metric} (items/*.parquet): the challenger cannot be "
                "compared with the holder; pass --force to promote without the comparison."
            )
    items.check_aligned(metric, a, b, (holder, challenger))
    return intervals.paired(a.items, b.items, resamples, seed)


def forest(rows: list[tuple[str, Difference]], path: Path, title: str, reference: str = "0") -> Path:
    """A forest plot: one line per row, its difference as a dot and its interval as a bar, 0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.4 * max(1, len(rows))))
    labels = [label for label, _ in rows][::-1]
    for y, (_, d) in enumerate(rows[::-1]):
        ax.errorbar(d.delta, y, xerr=[[d.delta - d.low], [d.high - d.delta]], fmt="o", color="k", capsize=3)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.set_xlabel(f"difference from {reference}, with its 95% bootstrap interval")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Confidence intervals for differences of evaluation metrics: paired bootstrap over the evaluated items,
a two-level bootstrap over seeds and items, bootstrap p-values and Holm's correction. Writes nothing.

A metric is computed from its items alone (:class:`Items`: Spearman or Pearson of a score against the
label, or the mean of a per-item column, as ``pipeline.metrics`` in an ``items/*.parquet`` file says).
A bootstrap resample draws the items with replacement; the paired bootstrap scores both runs on the same
drawn items, so what the two runs share (a hard item is hard for both) cancels out of the difference.

A resample is held as counts (how often each item was drawn, one row per resample), and each statistic
is computed as the same statistic weighted by those counts: the weighted Spearman uses the average
ranks the drawn values would get (:func:`ranks`), which is what ``scipy.stats.spearmanr`` of the drawn
items gives, without sorting every resample. 10,000 resamples of 1,379 STS pairs take well under 2 s.

The p-value is the paired bootstrap's two-sided one: twice the smaller share of resampled differences
on either side of 0 (``(k + 1) / (R + 1)`` each, capped at 1); it is below 0.05 when the 95% interval
excludes 0, up to Monte-Carlo error. Identical runs give delta 0, interval [0, 0] and p = 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

STATISTICS = ("spearman", "pearson", "mean")
CHUNK = 500  # resamples held in memory at once (CHUNK x items float64)


@dataclass(frozen=True)
class Items:
    """One metric of one run as its items give it: ``statistic`` over ``columns`` (each one value per item)."""

    statistic: str  # "spearman" | "pearson" | "mean"
    columns: tuple[np.ndarray, ...]  # (score, label) for spearman / pearson; (value,) for mean

    @property
    def size(self) -> int:
        return len(self.columns[0])


@dataclass(frozen=True)
class Difference:
    """B - A on one metric: the two values, the difference, its interval and p-value."""

    a: float
    b: float
    delta: float
    low: float
    high: float
    p_value: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def value(items: Items) -> float:
    """The metric itself, as sentence-transformers computes it (scipy's Spearman / Pearson, or the mean)."""
    from scipy import stats

    if items.statistic == "mean":
        return float(np.mean(items.columns[0]))
    test = stats.spearmanr if items.statistic == "spearman" else stats.pearsonr
    return float(test(*items.columns)[0])


def counts(rng: np.random.Generator, size: int, resamples: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``size`` items, ``CHUNK`` at a time: how often each item was drawn (float rows)."""
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        dtype = np.int32 if rows * size < 2**31 else np.int64  # int32 draws are the faster
        drawn = rng.integers(0, size, size=(rows, size), dtype=dtype) + np.arange(rows, dtype=dtype)[:, None] * size
        yield np.bincount(drawn.ravel(), minlength=rows * size).reshape(rows, size).astype(np.float64)


def ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The average rank each item's value gets among the drawn items (``weights``: counts, one row per
    resample): the rank ``scipy.stats.rankdata`` gives the drawn values, ties averaged."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    drawn = weights[:, order]
    tied = drawn if len(starts) == len(values) else np.add.reduceat(drawn, starts, axis=1)  # per distinct value
    average = np.cumsum(tied, axis=1)
    average -= (tied - 1) / 2
    group = np.empty(len(values), dtype=np.intp)
    group[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    return average[:, group]


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson's r of ``x`` and ``y`` with each item counted ``weights`` times, one per row."""
    total = weights.sum(axis=1)
    wx = weights * x
    sx, sxx, sxy = wx.sum(axis=1), _rowdot(wx, x), _rowdot(wx, y)
    sy, syy = _rowdot(weights, y), _rowdot(weights * y, y)
    cov = sxy - sx * sy / total
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant column: NaN, as scipy gives
        return cov / np.sqrt((sxx - sx * sx / total) * (syy - sy * sy / total))


def rank_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`weighted_pearson` of two rows of average ranks of the drawn items, whose weighted mean is
    always (drawn + 1) / 2: Spearman's rho of the drawn items."""
    total = weights.sum(axis=1)
    centre = total * ((total + 1) / 2) ** 2
    wx = weights * x
    cov = _rowdot(wx, y) - centre
    with np.errstate(invalid="ignore", divide="ignore"):  # all drawn items tied: NaN, as scipy gives
        return cov / np.sqrt((_rowdot(wx, x) - centre) * (_rowdot(weights * y, y) - centre))


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products (``b`` one row per resample, or one row for all)."""
    return a @ b if b.ndim == 1 else np.einsum("ij,ij->i", a, b)


def resampled(items: Items, weights: np.ndarray, label_ranks: np.ndarray | None = None) -> np.ndarray:
    """The metric on each resample (``weights``: counts); ``label_ranks``: the label's ranks, when shared."""
    if items.statistic == "mean":
        return weights @ items.columns[0] / weights.sum(axis=1)
    score, label = items.columns
    if items.statistic == "pearson":
        return weighted_pearson(score, label, weights)
    label_ranks = ranks(label, weights) if label_ranks is None else label_ranks
    return rank_pearson(ranks(score, weights), label_ranks, weights)


def on_resamples(runs: list[Items], resamples: int, seed: int) -> np.ndarray:
    """Every run's metric on the same bootstrap resamples of their (aligned) items: resamples x runs."""
    rng = np.random.default_rng(seed)
    out = []
    for weights in counts(rng, runs[0].size, resamples):
        label_ranks: dict[int, np.ndarray] = {}  # each distinct label column ranked once per chunk
        row = []
        for run in runs:
            shared = None
            if run.statistic == "spearman":
                key = next(k for k, r in enumerate(runs) if np.array_equal(r.columns[-1], run.columns[-1]))
                shared = label_ranks.setdefault(key, None)
                if shared is None:
                    shared = label_ranks[key] = ranks(run.columns[1], weights)
            row.append(resampled(run, weights, shared))
        out.append(np.column_stack(row))
    return np.vstack(out)


def p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference of 0: twice the smaller tail, capped at 1 (NaN when a
    resample's metric is undefined, e.g. a constant score)."""
    if np.isnan(deltas).any():
        return float("nan")
    tail = min(int((deltas <= 0).sum()), int((deltas >= 0).sum()))
    return min(1.0, 2 * (tail + 1) / (len(deltas) + 1))


def interval(deltas: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the resampled differences."""
    low, high = np.percentile(deltas, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired(a: Items, b: Items, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> Difference:
    """B - A on the same items: the paired bootstrap's percentile interval and p-value."""
    return paired_many([(a, b)], resamples, seed, level)[0]


def paired_many(
    pairs: list[tuple[Items, Items]], resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> list[Difference]:
    """:func:`paired` for several metrics of the same items at once: one set of resamples for all
    (each metric's interval is that of :func:`paired` with the same seed)."""
    values = on_resamples([run for pair in pairs for run in pair], resamples, seed)
    return [paired_on(a, b, values[:, 2 * k], values[:, 2 * k + 1], level) for k, (a, b) in enumerate(pairs)]


def paired_on(a: Items, b: Items, on_a: np.ndarray, on_b: np.ndarray, level: float = 0.95) -> Difference:
    """:func:`paired` from the two runs' metric on resamples already drawn (``on_a``, ``on_b``: one value each)."""
    deltas = on_b - on_a
    low, high = interval(deltas, level)
    va, vb = value(a), value(b)
    return Difference(va, vb, vb - va, low, high, p_value(deltas))


def versus_best(
    configs: dict[str, list[Items]], best: str, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> dict[str, Difference]:
    """Each configuration's seed mean against ``best``'s (``a``: the best's, ``b``: this one's) by a
    two-level bootstrap: every resample draws the seeds of each configuration with replacement, then
    the items (the same items for every run); the configuration's value is the mean over its drawn seeds."""
    runs = [r for name in configs for r in configs[name]]
    return versus_best_on(configs, on_resamples(runs, resamples, seed), best, seed, level)


def versus_best_on(
    configs: dict[str, list[Items]], per_run: np.ndarray, best: str, seed: int = 0, level: float = 0.95
) -> dict[str, Difference]:
    """:func:`versus_best` from every run's metric on resamples already drawn with ``seed`` (``per_run``:
    resamples x runs, the runs of ``configs`` in order): the seeds are drawn here."""
    names, resamples = list(configs), len(per_run)
    rng = np.random.default_rng(seed + 1)
    means, start = {}, 0
    for name in names:
        seeds = len(configs[name])
        drawn = rng.integers(0, seeds, size=(resamples, seeds)) + start
        means[name] = np.take_along_axis(per_run, drawn, axis=1).mean(axis=1)
        start += seeds
    point = {name: float(np.mean([value(r) for r in configs[name]])) for name in names}
    out = {}
    for name in names:
        deltas = means[name] - means[best]
        low, high = interval(deltas, level)
        out[name] = Difference(point[best], point[name], point[name] - point[best], low, high, p_value(deltas))
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (family-wise error over all of them)."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def spelled(difference: Difference) -> str:
    """``+0.0041 [-0.0010, +0.0093]``: the difference and its interval."""
    return f"{difference.delta:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}]"

"""Cost of the paired bootstrap behind every interval (``pipeline.tracking.intervals``), on STSb's sizes.

    .venv/bin/python -m benchmarks.bench_bootstrap [items=1379] [repeats=5]

Two runs' Spearman (and Pearson) over ``items`` pairs with STSb-like tied labels: ``compare --runs``
(10,000 resamples, one metric) and the in-job cost of the summary's baseline intervals (2,000
resamples, the four metrics of the default job's two STS files: dev 1,500 and test 1,379 pairs).
Prints wall and CPU seconds (the median of ``repeats``); run with ``OMP_NUM_THREADS=1`` to measure
one core.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from pipeline.tracking.intervals import Items, paired, paired_many


def timed(work, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def pair(rng, size: int) -> tuple[Items, Items, Items, Items]:
    label = np.round(rng.uniform(0, 5, size), 1)
    a, b = label + rng.normal(0, 1.0, size), label + rng.normal(0, 0.9, size)
    return (
        Items("spearman", (a, label)),
        Items("spearman", (b, label)),
        Items("pearson", (a, label)),
        Items("pearson", (b, label)),
    )


def main() -> None:
    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    size, repeats = int(options.get("items", 1379)), int(options.get("repeats", 5))
    rng = np.random.default_rng(0)
    sa, sb, pa, pb = pair(rng, size)
    wall, cpu = timed(lambda: paired(sa, sb, resamples=10_000), repeats)
    print(f"compare --runs, Spearman, {size} items, 10000 resamples: {wall:.3f} s wall, {cpu:.3f} s CPU")
    dev, test = pair(rng, 1500), pair(rng, 1379)

    def in_job() -> None:
        for sa_, sb_, pa_, pb_ in (dev, test):
            paired_many([(sa_, sb_), (pa_, pb_)], resamples=2000)

    wall, cpu = timed(in_job, repeats)
    print(
        f"summary intervals, 4 metrics (dev 1500 + test 1379 items), 2000 resamples: {wall:.3f} s wall, {cpu:.3f} s CPU"
    )


if __name__ == "__main__":
    main()

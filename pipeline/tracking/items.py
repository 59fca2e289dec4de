"""Per-item score files read back: one file (:func:`read_file`, :func:`read`), or a run's
``items/<evaluator>-<split>[-<dim>].parquet`` artifacts from MLflow (``items/baseline/...``: its starting
model's). The one reader of the files ``pipeline.stages.items`` writes; reads, never writes.

Each file's Parquet schema metadata ``pipeline.metrics`` names the metrics it gives (sentence-transformers'
full names) and how: ``{"sts-test_spearman_cosine": {"statistic": "spearman", "columns": ["score", "label"]}}``.
The file's ``label`` or ``query_id`` column (when there is one) is what pairs two runs' items: two runs
are compared item by item only when they hold the same items in the same order.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import PipelineError
from pipeline.tracking.intervals import STATISTICS, Items

FOLDER = "items"
BASELINE = "baseline"
METADATA = b"pipeline.metrics"  # the Parquet schema metadata key that describes a file's metrics
ID_COLUMNS = ("query_id", "label")  # what identifies an item, first found wins


@dataclass(frozen=True)
class Scored:
    """One metric's items in one run, and what identifies them."""

    items: Items
    ids: np.ndarray | None  # the items' query ids or labels, in order
    file: str  # the artifact it came from


def read_file(path: Path):
    """(the rows as a pandas DataFrame, ``{metric name: {"statistic": ..., "columns": [...]}}``) of one items
    file, each metric's description checked against what this version computes and the file's columns."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    described = json.loads((table.schema.metadata or {}).get(METADATA, b"{}"))
    frame = table.to_pandas()
    for name, spec in described.items():
        if spec.get("statistic") not in STATISTICS or any(c not in frame for c in spec.get("columns") or []):
            raise PipelineError(
                f"{Path(path).name}: metric {name!r} is described as {spec}, which this version cannot read."
            )
    return frame, described


def read(path: Path) -> dict[str, Scored]:
    """The metrics one items file gives: full metric name (without a ``baseline/`` prefix) -> its items."""
    frame, described = read_file(path)
    ids = next((frame[c].to_numpy() for c in ID_COLUMNS if c in frame), None)
    out = {}
    for name, spec in described.items():
        columns = tuple(frame[c].to_numpy(dtype=np.float64) for c in spec["columns"])
        out[name.removeprefix("baseline/")] = Scored(Items(spec["statistic"], columns), ids, Path(path).name)
    return out


def of_run(client, run_id: str, baseline: bool = False) -> dict[str, Scored]:
    """Every metric the run's items files give (its starting model's with ``baseline``); {} when it logged none."""
    from mlflow.exceptions import MlflowException

    folder = f"{FOLDER}/{BASELINE}" if baseline else FOLDER
    try:
        listed = client.list_artifacts(run_id, folder)
    except MlflowException as error:
        raise PipelineError(f"run {run_id}: its per-item scores cannot be read ({one_line(str(error))}).") from None
    files = [f.path for f in listed if not f.is_dir and f.path.endswith(".parquet")]
    out: dict[str, Scored] = {}
    if not files:
        return out
    with tempfile.TemporaryDirectory() as local, _no_progress_bar():
        downloaded = Path(client.download_artifacts(run_id, folder, local))  # one call, not one per file
        for path in files:
            out.update(read(downloaded / Path(path).name))
    return out


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar for every download: not on a command's console, which says what it read."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def baseline_of_run(client, run) -> dict[str, Scored]:
    """The items of the run's starting model: its own ``items/baseline/``, else those of the run its
    baseline was reused from (tag ``baseline.source``)."""
    found = of_run(client, run.info.run_id, baseline=True)
    source = run.data.tags.get("baseline.source")
    if not found and source and source != run.info.run_id:
        try:
            found = of_run(client, source, baseline=True)
        except PipelineError:  # the source run was deleted
            return {}
    return found


def check_aligned(metric: str, a: Scored, b: Scored, names: tuple[str, str]) -> None:
    """Refuse to pair items that are not the same items (count, then labels / query ids)."""
    if a.items.size != b.items.size:
        raise PipelineError(
            f"{metric}: run {names[0]} has {a.items.size} items and run {names[1]} {b.items.size}: "
            "compare runs evaluated on the same split."
        )
    if a.ids is not None and b.ids is not None and not np.array_equal(a.ids, b.ids):
        raise PipelineError(
            f"{metric}: runs {names[0]} and {names[1]} scored different items (their labels or query ids differ): "
            "compare runs evaluated on the same data."
        )

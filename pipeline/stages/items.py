"""Per-item scores of an evaluation: one row per evaluated item, and the metrics those rows aggregate to.

One Parquet file per evaluator and split, named like its metric prefix (``sts-test.parquet``,
``sts-test-128.parquet`` for a Matryoshka dimension, ``ir-dev.parquet``); the job logs them under
``items/`` (the baseline's under ``items/baseline/``). Columns:

- ``EmbeddingSimilarityEvaluator``: ``score`` (``score_<fn>`` per similarity function when it reports
  several) and ``label``;
- ``TripletEvaluator``: ``positive``, ``negative`` (anchor-positive and anchor-negative similarity) and
  ``correct`` (suffixed ``_<fn>`` when it reports several functions);
- ``InformationRetrievalEvaluator``: ``query_id`` and one column per per-query metric it averages, named as
  sentence-transformers names the metric after the prefix (``cosine_ndcg@10``, ``cosine_mrr@10``, ...).

Each file describes itself: the schema's key-value metadata ``pipeline.metrics`` is JSON
``{metric name: {"statistic": "spearman" | "pearson" | "mean", "columns": [...]}}``, the metric names
as the evaluator returns them (``sts-test_spearman_cosine``; a baseline file's metrics are logged under
``baseline/``); derived metrics (``*_max``) are not listed. ``pipeline.tracking.items`` reads the files back
and ``pipeline.tracking.intervals.value`` recomputes each metric from the rows.

The rows are what the evaluator itself computed, not a second encoding: while it runs, its
``embed_inputs`` (STS, triplet: the embeddings) or ``compute_metrics`` (IR: each query's ranked hits)
is wrapped to keep its inputs and outputs (:func:`recording`); the similarities are then the same
``sentence_transformers.util`` pairwise functions on the same embeddings, and an IR query's values the
evaluator's own ``compute_metrics`` on that query alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.tracking.items import METADATA

log = logging.getLogger(__name__)

_CLASS = object()  # an evaluator's method came from its class, not its instance


@dataclass(frozen=True)
class Items:
    """One evaluator's rows on one split, and the metrics they reproduce."""

    name: str  # the evaluator's name, its metric prefix: ``sts-test``, ``sts-test-128``
    frame: object  # pandas.DataFrame, one row per evaluated item
    metrics: dict[str, dict]  # metric name -> {"statistic": ..., "columns": [...]}


def _pairwise() -> dict[str, Callable]:
    """The similarity functions the STS and triplet evaluators apply, by the names they report."""
    from sentence_transformers import util

    return {
        "cosine": util.pairwise_cos_sim,
        "dot": util.pairwise_dot_score,
        "manhattan": util.pairwise_manhattan_sim,
        "euclidean": util.pairwise_euclidean_sim,
    }


def _sts_items(evaluator, calls: list) -> Items | None:
    import pandas as pd

    if evaluator.precision not in (None, "float32"):  # quantised: the evaluator unpacks and casts first
        log.warning("%s: no per-item scores for precision=%s embeddings", evaluator.name, evaluator.precision)
        return None
    (_, first), (_, second) = calls
    functions = _pairwise()
    names = [fn for fn in evaluator.similarity_fn_names if fn in functions]
    columns, metrics = {}, {}
    for fn in names:
        column = "score" if len(names) == 1 else f"score_{fn}"
        columns[column] = functions[fn](first, second).detach().cpu().numpy()
        for statistic in ("pearson", "spearman"):
            metrics[f"{evaluator.name}_{statistic}_{fn}"] = {"statistic": statistic, "columns": [column, "label"]}
    columns["label"] = np.asarray(evaluator.scores, dtype=np.float64)
    return Items(evaluator.name, pd.DataFrame(columns), metrics)


def _triplet_items(evaluator, calls: list) -> Items | None:
    import pandas as pd

    (_, anchors), (_, positives), (_, negatives) = calls
    functions = _pairwise()
    names = [fn for fn in evaluator.similarity_fn_names if fn in functions]
    columns, metrics = {}, {}
    for fn in names:
        suffix = "" if len(names) == 1 else f"_{fn}"
        positive, negative = functions[fn](anchors, positives), functions[fn](anchors, negatives)
        columns[f"positive{suffix}"] = positive.detach().cpu().numpy()
        columns[f"negative{suffix}"] = negative.detach().cpu().numpy()
        columns[f"correct{suffix}"] = (positive > negative + evaluator.margin[fn]).cpu().numpy()
        metrics[f"{evaluator.name}_{fn}_accuracy"] = {"statistic": "mean", "columns": [f"correct{suffix}"]}
    return Items(evaluator.name, pd.DataFrame(columns), metrics)


def _ir_items(evaluator, calls: list) -> Items | None:
    """Per query, the evaluator's own ``compute_metrics`` on that query's hits alone (one per score function)."""
    import pandas as pd

    single = copy.copy(evaluator)  # compute_metrics reads the query ids by position and divides by len(queries)
    columns: dict[str, list] = {"query_id": list(evaluator.queries_ids)}
    for fn, ((results,), _) in zip(evaluator.score_functions, calls):
        for query_id, query, hits in zip(evaluator.queries_ids, evaluator.queries, results):
            single.queries_ids, single.queries = [query_id], [query]
            for metric, values in type(evaluator).compute_metrics(single, [hits]).items():
                for k, value in values.items():
                    columns.setdefault(f"{fn}_{metric.replace('@k', f'@{k}')}", []).append(float(value))
    metrics = {f"{evaluator.name}_{c}": {"statistic": "mean", "columns": [c]} for c in columns if c != "query_id"}
    return Items(evaluator.name, pd.DataFrame(columns), metrics)


# evaluator class -> (the method whose calls are kept, how rows are made from them)
RECORDERS: dict[str, tuple[str, Callable]] = {
    "EmbeddingSimilarityEvaluator": ("embed_inputs", _sts_items),
    "TripletEvaluator": ("embed_inputs", _triplet_items),
    "InformationRetrievalEvaluator": ("compute_metrics", _ir_items),
}


def leaves(evaluator) -> list:
    """The evaluators inside ``evaluator`` (a SequentialEvaluator: Matryoshka dimensions), or itself."""
    inner = getattr(evaluator, "evaluators", None)
    return [leaf for child in inner for leaf in leaves(child)] if inner is not None else [evaluator]


@dataclass
class Recording:
    """What the evaluators inside one evaluator computed while it ran (:func:`recording`)."""

    calls: list[tuple[object, list]] = field(default_factory=list)  # (evaluator, its kept (args, result))

    def items(self) -> list[Items]:
        """One :class:`Items` per evaluator recorded (an evaluator whose settings allow none is skipped)."""
        made = [RECORDERS[type(leaf).__name__][1](leaf, calls) for leaf, calls in self.calls]
        return [items for items in made if items is not None]


@contextlib.contextmanager
def recording(evaluator) -> Iterator[Recording]:
    """While the block runs ``evaluator``, keep what each evaluator inside it that has a recorder
    computes; the evaluators are left as they were."""
    recorded, restore = Recording(), []
    for leaf in leaves(evaluator):
        kind = type(leaf).__name__
        if kind not in RECORDERS:
            log.info("%s: no per-item scores for a %s", getattr(leaf, "name", kind), kind)
            continue
        attribute = RECORDERS[kind][0]
        recorded.calls.append((leaf, []))
        restore.append((leaf, attribute, vars(leaf).get(attribute, _CLASS)))
        setattr(leaf, attribute, _kept_calls(getattr(leaf, attribute), recorded.calls[-1][1]))
    try:
        yield recorded
    finally:
        for leaf, attribute, before in restore:
            if before is _CLASS:
                delattr(leaf, attribute)  # the class's method again
            else:
                setattr(leaf, attribute, before)


def _kept_calls(method: Callable, calls: list) -> Callable:
    def kept(*args, **kwargs):
        out = method(*args, **kwargs)
        calls.append((args, out))
        return out

    return kept


def write_items(recorded: list[Items], folder: Path) -> list[Path]:
    """Each :class:`Items` as ``folder/<name>.parquet``, written whole under a temporary name first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for items in recorded:
        table = pa.Table.from_pandas(items.frame, preserve_index=False)
        metadata = {**(table.schema.metadata or {}), METADATA: json.dumps(items.metrics).encode()}
        path, partial = folder / f"{items.name}.parquet", folder / f".{items.name}.parquet.partial"
        pq.write_table(table.replace_schema_metadata(metadata), partial)
        os.replace(partial, path)
        paths.append(path)
    return paths

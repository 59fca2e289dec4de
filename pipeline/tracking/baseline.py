"""The baseline cache in the tracking store: the runs that computed a baseline, found by its key.

A job that computes its baseline (a miss) writes the ``baseline/`` metrics, the artifact
``baseline/metrics.json`` (the same values under sentence-transformers' own names, ``@`` included) and
the tags ``baseline.key`` (``pipeline.stages.baseline.baseline_key``), ``baseline.cache=miss`` and
``baseline.source`` (its own run id). A later job with the same key, in any experiment of the same
store, copies the metrics of the oldest FINISHED miss whose metrics are all there, and is tagged
``baseline.cache=hit`` and ``baseline.source`` (that run). A FAILED, KILLED, RUNNING or deleted run is
never a source, nor one whose ``baseline/`` metrics differ from its ``metrics.json``.

The baseline's per-item scores (``pipeline.stages.items``) are artifacts under ``items/baseline/``: a
miss logs the files it wrote, a hit copies its source's, so both hold the same files.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.tracking.record import active_run, log_files, log_metrics, set_tags
from pipeline.tracking.scrub import metric_key

log = logging.getLogger(__name__)

METRICS_FILE = "baseline/metrics.json"
ITEMS_FOLDER = "items/baseline"
SOURCES_TRIED = 5  # oldest first: one that fails its check is skipped for the next


@dataclass(frozen=True)
class Baseline:
    metrics: dict[str, float]  # ``baseline/{name}`` -> value, sentence-transformers' names
    source: str  # the run that computed them


def find_baseline(key: str) -> Baseline | None:
    """The baseline a FINISHED run of the active store computed with this key, or None."""
    import mlflow

    client = mlflow.MlflowClient()
    runs = client.search_runs(
        _experiment_ids(client),
        filter_string=f"tags.`baseline.key` = '{key}' AND tags.`baseline.cache` = 'miss' "
        "AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=SOURCES_TRIED,
    )
    for run in runs:
        metrics = _complete_metrics(run)
        if metrics is not None:
            return Baseline(metrics, run.info.run_id)
        log.warning("Baseline: run %s has key %s but not all its baseline metrics: not reused", run.info.run_id, key)
    return None


def record_baseline(key: str, metrics: dict[str, float], source: str | None = None) -> None:
    """The baseline into the active run: metrics, ``baseline/metrics.json`` and the ``baseline.*`` tags;
    ``source`` is the run it was copied from (None: computed here). The tags come last, so a run whose
    key is tagged holds the metrics."""
    run = active_run()
    if run is None:
        return
    import mlflow

    log_metrics(metrics)
    mlflow.log_dict(metrics, METRICS_FILE)
    set_tags(
        {
            "baseline.key": key,
            "baseline.cache": "hit" if source else "miss",
            "baseline.source": source or run.info.run_id,
        }
    )


def log_baseline_items(paths: list[Path]) -> None:
    """The baseline's per-item files, computed in this run, under ``items/baseline/`` (no-op without a run)."""
    if active_run() is not None:
        log_files(paths, ITEMS_FOLDER)


def copy_baseline_items(source: str) -> None:
    """The per-item files of run ``source``'s baseline, logged again under this run's ``items/baseline/``."""
    if active_run() is None:
        return
    import mlflow

    if not mlflow.MlflowClient().list_artifacts(source, ITEMS_FOLDER):
        log.warning("Baseline: run %s logged no per-item scores (%s/): this run has none either", source, ITEMS_FOLDER)
        return
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(run_id=source, artifact_path=ITEMS_FOLDER, dst_path=folder)
        mlflow.log_artifacts(local, ITEMS_FOLDER)


def _experiment_ids(client) -> list[str]:
    """Every active experiment of the store (all pages)."""
    ids, token = [], None
    while True:
        page = client.search_experiments(page_token=token)
        ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            return ids


def _complete_metrics(run) -> dict[str, float] | None:
    """The run's ``metrics.json`` when every value in it is the run's own logged metric, else None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{METRICS_FILE}")
    except (MlflowException, OSError, ValueError):
        return None
    if not logged or any(run.data.metrics.get(metric_key(name)) != value for name, value in logged.items()):
        return None
    return {str(name): float(value) for name, value in logged.items()}

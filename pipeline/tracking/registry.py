"""The MLflow Model Registry: a job's model as a new version of a registered model, the best run of a
sweep promoted under an alias.

Writes to MLflow: a model version of ``NAME`` (from the run's LoggedModel ``models:/<model_id>``)
with the version tags ``run_id``, ``config.digest`` (of the run's flattened config), ``optimized_metric``
and ``metric.<name>`` for each final metric; the alias (``champion``) on that version.
Load it back with ``mlflow.sentence_transformers.load_model("models:/NAME@champion")``.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pipeline.tracking.grouping as grouping
from pipeline import PipelineError
from pipeline.tracking.leaderboard import EVALUATOR_METRIC
from pipeline.tracking.scrub import MAX_TAG_LENGTH, metric_key, metric_name, redact


def check_registry(uri: str, name: str | None = None, key: str = "tracking.register_as") -> None:
    """Fail fast when ``name`` is not a valid registered model name or the store at ``uri`` has no
    Model Registry (a file store, say)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if name is not None:
        check_name(name, key)
    try:
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models(max_results=1)
    except MlflowException as error:
        reason = str(error).split(". ")[0]
        raise PipelineError(
            f"{key}: the store {redact(uri)!r} has no usable Model Registry ({reason}): "
            "use a database store (tracking.uri=sqlite:///PATH/mlflow.db) or a tracking server."
        ) from None


def check_name(name: str, key: str = "tracking.register_as") -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as error:
        raise PipelineError(f"{key}={name!r}: {error.message}") from None


def check_alias(alias: str) -> None:
    """MLflow's own alias rules (letters, digits, ``_`` and ``-``; not ``latest`` or ``vN``)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    try:
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
    except MlflowException as error:
        raise PipelineError(f"--alias {alias!r}: {error.message}") from None


def config_digest(params: dict[str, str]) -> str:
    """A short digest of a run's flattened config (its params): equal configs, equal digests."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def version_tags(run_id: str, params: dict[str, str], metrics: dict[str, float]) -> dict[str, str]:
    """The run, its config digest and its key metrics (final evaluator metrics, the optimized one),
    each metric under MLflow's spelling (tags refuse "@" as metric names do: ``metric.ir-dev_cosine_ndcg_at_10``)."""
    optimized = params.get("optimized_metric", "")
    stored = {metric_key(name): value for name, value in metrics.items()}
    key = {
        n: v for n, v in stored.items() if (EVALUATOR_METRIC.match(n) or n == metric_key(optimized)) and "/" not in n
    }
    return {
        "run_id": run_id,
        "config.digest": config_digest(params),
        "optimized_metric": optimized,
        **{f"metric.{name}": repr(float(value))[:MAX_TAG_LENGTH] for name, value in sorted(key.items())},
    }


def register(model_uri: str, name: str, tags: dict[str, str]):
    """A new version of ``name`` (created when missing) from ``model_uri``; returns the ModelVersion."""
    import mlflow

    return mlflow.register_model(model_uri, name, tags=tags)


def register_model(model_uri: str, name: str, params: dict[str, str], metrics: dict[str, float]) -> str:
    """The job's logged model as a new version of ``name`` (``tracking.register_as``), tagged with the
    active run, its config digest and metrics; returns the version number."""
    import mlflow

    run_id = mlflow.active_run().info.run_id
    return register(model_uri, name, version_tags(run_id, params, metrics)).version


def logged_model_uri(client, run) -> str:
    """``models:/<model_id>`` of the model the run logged; refused when it logged none."""
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'", max_results=1
    )
    if not found:
        raise PipelineError(
            f"run {run.info.run_id} logged no model (tracking.log_model=false, or no train stage): "
            "promote a run that logged one."
        )
    return f"models:/{found[0].model_id}"


def check_promotable(run, metric: str | None) -> float | None:
    """The run's value of ``metric`` (either spelling); refused unless the run FINISHED and logged a finite value."""
    if run.info.status != "FINISHED":
        raise PipelineError(
            f"run {run.info.run_id} is {run.info.status}, not FINISHED: promote a run that finished "
            f"({run.data.tags.get('failure_reason', 'no reason recorded')})."
        )
    if not metric:
        return None
    value = run.data.metrics.get(metric_key(metric))
    if value is None or not math.isfinite(value):
        have = ", ".join(sorted(metric_name(m) for m in run.data.metrics if EVALUATOR_METRIC.match(m))) or "none"
        raise PipelineError(
            f"run {run.info.run_id} has no finite {metric_name(metric)!r} (its final metrics: {have}): pass --metric NAME."
        )
    return value


@dataclass(frozen=True)
class Choice:
    """The child of a sweep to promote, the metric it was ranked by (sentence-transformers' name) and why it was picked."""

    run: Any
    metric: str
    reason: str


def best_child(client, parent_id: str, metric: str | None) -> Choice:
    """The FINISHED child of sweep ``parent_id`` to promote, by ``metric`` (default: the sweep's optimized
    metric, in the sweep's direction). When the sweep swept ``seed`` (as the leaderboard folds): the
    configuration with the best mean over its seeds (:mod:`pipeline.tracking.grouping`: every param but
    ``seed`` equal, config groups included), and within it the best seed; else the best child."""
    parent = _parent(client, parent_id)
    metric = metric_name(metric or parent.data.tags.get("pipeline.optimized_metric") or "")
    if not metric:
        raise PipelineError(f"--parent {parent_id}: the sweep ranked by no metric: pass --metric NAME.")
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'FINISHED'",
    )
    stored = metric_key(metric)
    scored = [c for c in children if math.isfinite(c.data.metrics.get(stored, math.nan))]
    if not scored:
        raise PipelineError(
            f"--parent {parent_id}: no FINISHED child logged {metric!r} ({len(children)} finished): "
            "nothing to promote; rerun the sweep or pass --metric NAME."
        )
    sign = 1 if parent.data.tags.get("pipeline.direction", "maximize") == "minimize" else -1

    def loss(runs: list) -> float:  # lower is better, whatever the direction
        return sign * statistics.fmean(c.data.metrics[stored] for c in runs)

    if f"sweep.{grouping.FOLDED}" not in parent.data.params:  # as the leaderboard: seeds folded when swept
        best = min(scored, key=lambda c: loss([c]))
        return Choice(best, metric, f"the best {metric} of {len(scored)} finished jobs")
    groups: dict[grouping.Configuration, list] = {}
    for child, config in zip(scored, grouping.configurations([c.data.params for c in scored])):
        groups.setdefault(config, []).append(child)
    config, members = min(groups.items(), key=lambda item: loss(item[1]))
    best = min(members, key=lambda c: loss([c]))
    shown = grouping.differing(list(groups))
    described = " ".join(f"{k}={v}" for k, v in config if k in shown) or "the one configuration"
    mean = statistics.fmean(c.data.metrics[stored] for c in members)
    reason = (
        f"seeds folded: the best {metric} mean over seeds of {len(groups)} configurations is {described} "
        f"({mean:.4f} over {len(members)} seeds); within it the best seed, seed={best.data.params.get('seed')}"
    )
    return Choice(best, metric, reason)


def _parent(client, parent_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(parent_id)
    except MlflowException:
        raise PipelineError(
            f"--parent {parent_id}: no such run in this store: copy the sweep's parent run id."
        ) from None


def promote(uri: str, run, name: str, alias: str) -> tuple[Any, bool]:
    """Point ``alias`` of ``name`` (in the store at ``uri``) at the run's model: the version the run
    registered already (``tracking.register_as``, or an earlier promotion), else a new one.
    Returns (the ModelVersion, whether it was reused)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    existing = registered_versions(client, name, run.info.run_id)
    if existing:
        version = existing[0]
    else:
        tags = version_tags(run.info.run_id, run.data.params, run.data.metrics)
        version = register(logged_model_uri(client, run), name, tags)
    client.set_registered_model_alias(name, alias, version.version)
    return version, bool(existing)


def alias_holder(client, name: str, alias: str) -> str | None:
    """The run whose model ``models:/NAME@ALIAS`` is (its version's source run); None when no version holds it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias).run_id or None
    except MlflowException:  # no such model, or no such alias
        return None


def registered_versions(client, name: str, run_id: str) -> list:
    """The versions of ``name`` made from the run's model (their source run), oldest first."""
    found = client.search_model_versions(f"run_id = '{run_id}'")
    return sorted((v for v in found if v.name == name), key=lambda v: int(v.version))

"""Which way a metric improves: the one rule that sweeps, leaderboards and promotion rank by.

sentence-transformers' evaluators report higher-is-better metrics (``SentenceEvaluator.greater_is_better``
is True for all of them: correlations, accuracies, nDCG, MRR, MAP, ``negative_mse``); a loss is
lower-is-better (transformers' rule for ``metric_for_best_model``: a name ending in ``loss``), as are
the error measures ``mse``, ``mae``, ``rmse`` and ``perplexity``. Writes nothing to MLflow.
"""

from __future__ import annotations

import re

from pipeline import PipelineError

MAXIMIZE, MINIMIZE = "maximize", "minimize"
# The last word of a metric name that makes it lower-is-better (besides any word ending in "loss").
LOWER_IS_BETTER = {"mse", "mae", "rmse", "perplexity"}


def metric_direction(metric: str) -> str:
    """``minimize`` for a loss-like metric (``eval_loss``, ``train_loss``, ``sts-dev_mse``), else
    ``maximize`` (every sentence-transformers evaluator metric, ``negative_mse`` included)."""
    words = [word for word in re.split(r"[^a-z0-9]+", metric.lower()) if word]
    if not words or (len(words) > 1 and words[-2] == "negative"):
        return MAXIMIZE
    return MINIMIZE if words[-1].endswith("loss") or words[-1] in LOWER_IS_BETTER else MAXIMIZE


def sweep_direction(stated: str | None, metric: str | None) -> str:
    """The direction a sweep optimises ``metric`` in: ``stated`` (``hydra.sweeper.direction``) when
    given, else the metric's own; a stated direction that contradicts the metric is refused."""
    if stated is not None and stated not in (MAXIMIZE, MINIMIZE):
        raise PipelineError(
            f"hydra.sweeper.direction={stated!r}: use maximize, minimize or null (null: from optimized_metric)."
        )
    if not metric:
        return stated or MAXIMIZE
    derived = metric_direction(metric)
    if stated is not None and stated != derived:
        better = "lower" if derived == MINIMIZE else "higher"
        raise PipelineError(
            f"hydra.sweeper.direction={stated} contradicts optimized_metric={metric!r}, for which {better} is "
            f"better: drop hydra.sweeper.direction (null: {derived}, taken from the metric) or set it to {derived}."
        )
    return derived

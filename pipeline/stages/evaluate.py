"""The evaluate stage: run each split's evaluator on the (trained) model.

Returns the metrics under the evaluators' own names (``sts-test_spearman_cosine``, ...), the
result CSVs they wrote and one Parquet file of per-item scores per evaluator and split
(``items/sts-test.parquet``: ``pipeline.stages.items``); the job logs them to MLflow. A NaN or infinite metric is an error,
never a result.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import PipelineError
from pipeline.stages import items

log = logging.getLogger(__name__)


class NonFiniteMetricError(PipelineError):
    """An evaluator returned NaN or inf: the model (or the data) is broken. The run ends FAILED
    with this message; the command prints it as one line, like any other stop it can explain."""


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    files: list[Path]
    items: list[Path] = field(default_factory=list)  # ``<output_dir>/items/<evaluator>-<split>[-<dim>].parquet``


def evaluate(model, evaluators: dict, output_dir: Path) -> EvalResult:
    """Score ``model`` with each evaluator; CSVs go under ``output_dir``, per-item scores under ``output_dir/items``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    recorded: list[items.Items] = []
    for evaluator in evaluators.values():
        with items.recording(evaluator) as kept:
            scores = evaluator(model, output_path=str(output_dir))
        bad = [name for name, value in scores.items() if not math.isfinite(value)]
        if bad:
            raise NonFiniteMetricError(
                f"evaluator {getattr(evaluator, 'name', type(evaluator).__name__)!r} returned non-finite {', '.join(bad)}: the model's "
                "embeddings are degenerate (diverged or collapsed training?) or the scores are constant."
            )
        # SequentialEvaluator's unprefixed aggregate repeats a metric it holds and would clash across splits
        metrics.update({name: float(value) for name, value in scores.items() if name != "sequential_score"})
        recorded += kept
    rows = items.write_items(recorded, output_dir / "items")
    return EvalResult(metrics=metrics, files=sorted(output_dir.glob("*.csv")), items=rows)

"""The metric names the evaluators will log, from their specs (``pipeline.stages.spec``): config only, no data.

``evaluator`` (one group option: ``sts``, ``triplet``, ``ir``, ``none``) comes first; ``evaluators``
(``evaluators=[sts,ir]``: a dict of group options under their names) adds more beside it. They all run
on each split in one ``SequentialEvaluator``; each metric keeps its evaluator's prefix
(``sts-dev_spearman_cosine``, ``ir-dev_cosine_ndcg@10``). Writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import PipelineError
from pipeline.stages.spec import EvaluatorSpec


def metric_names(specs: Sequence[EvaluatorSpec], split: str = "dev", dims: Sequence[int] | None = None) -> list[str]:
    """The names the evaluators log on ``split``: ``{name}-{split}_{metric}``, and with Matryoshka
    dimensions ``{name}-{split}-{dim}_{metric}`` too."""
    names = []
    for spec in specs:
        for metric in dict.fromkeys([spec.primary_metric, *spec.metrics]):
            if metric:
                names += [
                    f"{spec.name}-{split}_{metric}",
                    *(f"{spec.name}-{split}-{dim}_{metric}" for dim in dims or []),
                ]
    return names


def check_optimized_metric(
    metric: str | None, specs: Sequence[EvaluatorSpec], dims: Sequence[int] | None = None
) -> None:
    """``optimized_metric`` must be a dev metric some evaluator logs (when any evaluator runs)."""
    if not specs or not metric:
        return
    available = metric_names(specs, "dev", dims)
    if str(metric) not in available:
        raise PipelineError(
            f"optimized_metric={metric!r} is not logged by the evaluators {[spec.name for spec in specs]}: set "
            f"optimized_metric to one of {', '.join(available)}."
        )

"""Which evaluators a config asks for, and the metric names they will log: config only, no data.

``evaluator`` (one group option: ``sts``, ``triplet``, ``ir``, ``none``) comes first; ``evaluators``
(``evaluators=[sts,ir]``: a dict of group options under their names) adds more beside it. They all run
on each split in one ``SequentialEvaluator``; each metric keeps its evaluator's prefix
(``sts-dev_spearman_cosine``, ``ir-dev_cosine_ndcg@10``). Writes nothing.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline import PipelineError


def evaluator_specs(cfg: DictConfig) -> dict[str, DictConfig]:
    """Metric prefix -> evaluator config, in the order they run; an evaluator with no class is skipped."""
    specs: dict[str, DictConfig] = {}
    if cfg.evaluator.get("_target_"):
        specs[str(cfg.evaluator.name)] = cfg.evaluator
    for key, spec in (cfg.get("evaluators") or {}).items():
        if not spec.get("_target_"):
            continue
        name = str(spec.name)
        if name in specs:
            raise PipelineError(
                f"evaluators.{key}: an evaluator named {name!r} is already configured: drop one of them "
                f"(evaluator=none keeps only the list) or rename it with evaluators.{key}.name=OTHER."
            )
        specs[name] = spec
    return specs


def eval_splits(specs: dict[str, DictConfig]) -> list[str]:
    """Every split some evaluator scores in the evaluate stage, first seen first."""
    return list(dict.fromkeys(str(split) for spec in specs.values() for split in spec.splits))


def splits_needed(cfg: DictConfig, specs: dict[str, DictConfig]) -> dict[str, list[str]]:
    """Split -> the evaluators that score it: each evaluator's ``splits`` when the evaluate stage runs,
    and every evaluator on ``dev`` when the trainer evaluates during training."""
    needed: dict[str, list[str]] = {}
    if "evaluate" in cfg.stages:
        for name, spec in specs.items():
            for split in spec.splits:
                needed.setdefault(str(split), []).append(name)
    if "train" in cfg.stages and str(cfg.training.eval_strategy) != "no":
        dev = needed.setdefault("dev", [])
        dev += [name for name in specs if name not in dev]
    return needed


def metric_names(specs: dict[str, DictConfig], split: str = "dev", dims: list[int] | None = None) -> list[str]:
    """The names the evaluators log on ``split``: ``{name}-{split}_{metric}``, and with Matryoshka
    dimensions ``{name}-{split}-{dim}_{metric}`` too."""
    names = []
    for name, spec in specs.items():
        for metric in dict.fromkeys([spec.get("primary_metric"), *(spec.get("metrics") or [])]):
            if metric:
                names += [f"{name}-{split}_{metric}", *(f"{name}-{split}-{dim}_{metric}" for dim in dims or [])]
    return names


def check_optimized_metric(cfg: DictConfig, specs: dict[str, DictConfig]) -> None:
    """``optimized_metric`` must be a dev metric some evaluator logs (when any evaluator runs)."""
    metric = cfg.get("optimized_metric")
    if not specs or not metric:
        return
    available = metric_names(specs, "dev", list(cfg.loss.get("matryoshka_dims") or []))
    if str(metric) not in available:
        raise PipelineError(
            f"optimized_metric={metric!r} is not logged by the evaluators {list(specs)}: set optimized_metric to one of "
            f"{', '.join(available)}."
        )

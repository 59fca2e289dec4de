"""The job spec: the composed config read once into frozen, typed parts, each fact derived here.

:func:`read_spec` runs once per job, in preflight (``pipeline.job``), after the key check
(``pipeline.stages.schema``) and before ``pipeline.stages.validate`` checks the values. Stages and
runtime take the part they need: ``spec.loss``, ``spec.evaluators``, ``spec.guard``, or a config node
that belongs to a library (``spec.training``: ``SentenceTransformerTrainingArguments``; ``loss.arguments``
and an evaluator's ``arguments``, ``evaluators.NAME.evaluator``: the class named by ``_target_``). Writes nothing.

Facts derived here, and nowhere else: which stages run, whether the trainer evaluates during training, the
evaluators, the splits they score and the metric names they log (their classes', run on two rows:
``runtime.catalogue.logged_metrics``), ``optimized_metric`` and which way it improves, the loss's class
and whether it needs a guide, Matryoshka, LoRA, early stopping, the guard's settings. The data nodes
(the train sets and the columns each trains on, prompts, the leakage audit's settings) are read by
``stages.dataspec`` into ``spec.data`` and ``spec.eval_data``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.runtime import catalogue
from pipeline.runtime.guard import GuardSettings
from pipeline.stages import settings
from pipeline.stages.dataspec import DataSource, DataSpec, read_data, read_source
from pipeline.stages.splits import LABEL_COLUMNS
from pipeline.tracking.direction import MAXIMIZE, metric_direction

# Options of the ``loss`` block that every loss takes (settings.LossOptions); the rest goes to the loss class.
LOSS_OPTIONS = tuple(settings.declared(settings.LossOptions))


@dataclass(frozen=True)
class Stages:
    """``stages``: the names in order, and which of them run."""

    names: tuple[str, ...]
    mine: bool
    train: bool
    evaluate: bool
    baseline: bool  # the starting model scored before training (``baseline``, with train and evaluate stages)


@dataclass(frozen=True)
class EvaluatorSpec:
    """One evaluator: the pipeline's settings for it, apart from the evaluator class's arguments."""

    name: str  # metric prefix: ``{name}-{split}_{metric}``
    key: str  # where the config holds it: ``evaluators.sts``
    arguments: (
        DictConfig  # ``evaluator``: ``_target_``, ``_partial_`` and the class's own arguments (``name`` set per split)
    )
    columns: tuple[str, ...]  # read in the class's argument order
    splits: tuple[str, ...]  # scored by the evaluate stage
    primary_metric: str  # the config's, else the class's own
    metrics: tuple[str, ...]  # the names the class logs (run on two rows), for checking optimized_metric
    label: str | None  # retrieval: the relevance column, when the split has it
    score_range: tuple[float, float] | None  # scores must lie in it (None: any finite number)
    corpus: str | None  # retrieval: an extra corpus file (``evaluators.NAME.corpus``, else the data's ``corpus``)
    prompts: tuple[str | None, ...]  # per text column: the train column's prompt in the same position

    @property
    def target(self) -> str:
        return str(self.arguments._target_)

    def logged_names(self, split: str = "dev", dims: Sequence[int] | None = None) -> list[str]:
        """The names it logs on ``split``: ``{name}-{split}_{metric}``, and with Matryoshka dimensions
        ``{name}-{split}-{dim}_{metric}`` too."""
        return [
            name
            for metric in self.metrics
            for name in (
                f"{self.name}-{split}_{metric}",
                *(f"{self.name}-{split}-{dim}_{metric}" for dim in dims or []),
            )
        ]

    def record(self) -> dict:
        """The evaluator as plain data, for cache keys: its settings and its class's arguments."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {**values, "arguments": OmegaConf.to_container(self.arguments, resolve=True)}


@dataclass(frozen=True)
class LossSpec:
    """``loss``: the class's arguments apart from the options every loss takes."""

    arguments: DictConfig  # ``_target_``, ``_partial_`` and the loss class's own arguments
    class_name: str
    needs_guide: bool  # the class takes a ``guide`` model (GIST losses); only worked out when training
    matryoshka_dims: tuple[int, ...] | None  # None: no MatryoshkaLoss
    matryoshka_weights: tuple[float, ...] | None  # None: 1 each
    gathers_across_devices: bool  # in-batch negatives gathered from every rank

    @property
    def matryoshka_scale(self) -> float:
        """MatryoshkaLoss sums the loss at each dimension, weighted: the sum of the weights (1 without it)."""
        if not self.matryoshka_dims:
            return 1.0
        return float(sum(self.matryoshka_weights or [1.0] * len(self.matryoshka_dims)))


@dataclass(frozen=True)
class EarlyStopping:
    """``early_stopping`` when ``patience`` is set and a train stage runs."""

    patience: int
    threshold: float


@dataclass(frozen=True)
class JobSpec:
    stages: Stages
    evaluates_during_training: bool  # a train stage with ``training.eval_strategy`` other than ``no``
    evaluators: tuple[EvaluatorSpec, ...]  # in the order they run
    splits_needed: dict[str, tuple[str, ...]]  # split -> names of the evaluators that score it
    optimized_metric: str | None  # None without evaluators or when the config says null
    direction: str  # ``maximize`` / ``minimize``: pipeline.tracking.direction's rule for the metric
    loss: LossSpec
    peft: DictConfig | None  # ``model.peft`` when ``r`` asks for a LoRA adapter
    early_stopping: EarlyStopping | None
    guard: GuardSettings | None  # None: ``guard.enabled`` false
    data: DataSpec  # the train sets, prompts and the leakage audit's settings (``data``)
    eval_data: DataSource  # ``eval_data``, else ``data``; its ``key`` says which
    # Nodes read as they are (pipeline nodes closed by the schema, library arguments by the library).
    model: DictConfig
    guide: DictConfig | None
    miner: DictConfig | None
    mine: DictConfig | None
    training: DictConfig
    hardware: DictConfig
    tracking: DictConfig
    seed: int
    smoke: bool
    name: str
    baseline_reuse: bool
    # Every leaf of the composed config (``hydra`` apart), dot path -> resolved value: what cache keys are
    # derived from (each cache keys all of them but those it declares not to matter: ``reuse.keyed_leaves``).
    leaves: dict[str, Any] = field(default_factory=dict)

    def evaluator(self, name: str) -> EvaluatorSpec:
        return next(spec for spec in self.evaluators if spec.name == name)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """Every split some evaluator scores in the evaluate stage, first seen first."""
        return tuple(dict.fromkeys(split for spec in self.evaluators for split in spec.splits))

    @property
    def prompts(self) -> dict[str, str]:
        """Train column -> prompt (``data.prompts``)."""
        return self.data.prompts

    @property
    def training_prompts(self) -> dict[str, str]:
        """The prompts training takes: on a mined set, its ``negative`` column holds candidate texts, so
        it gets the positive column's prompt."""
        positive = self.data.train_columns[1] if self.stages.mine else None
        return {**self.prompts, "negative": self.prompts[positive]} if positive in self.prompts else self.prompts


def read_spec(cfg: DictConfig) -> JobSpec:
    """The job spec of a composed (key-checked) config.

    A node read with ``.get`` (``early_stopping``, ``guard``, ``evaluators``...) may be absent from a
    config composed without ``conf/config.yaml``'s own nodes: absent means off. (``pipeline.rerun`` and
    ``pipeline.resume`` fill what a logged config lacks first: ``logged_config.read_logged``.)
    Every declared value is checked first (``settings.check_values``): the spec reads checked values.
    """
    settings.check_values(cfg)
    names = tuple(str(stage) for stage in cfg.stages)
    train = "train" in names
    evaluate = "evaluate" in names
    stages = Stages(names, "mine" in names, train, evaluate, bool(cfg.get("baseline")) and train and evaluate)
    evaluates = train and str(cfg.training.eval_strategy) != "no"
    data = read_data(cfg.data)
    eval_data = read_source(cfg.eval_data, "eval_data") if cfg.get("eval_data") else data
    evaluators = read_evaluators(cfg.get("evaluators"), eval_data, data)
    metric = str(cfg.optimized_metric) if cfg.get("optimized_metric") and evaluators else None
    patience = (cfg.get("early_stopping") or {}).get("patience")
    return JobSpec(
        stages=stages,
        evaluates_during_training=evaluates,
        evaluators=evaluators,
        splits_needed=splits_needed(evaluators, stages.evaluate, evaluates),
        optimized_metric=metric,
        direction=metric_direction(metric) if metric else MAXIMIZE,
        loss=read_loss(cfg.loss, train),
        peft=cfg.model.peft if (cfg.model.get("peft") or {}).get("r") is not None else None,
        early_stopping=EarlyStopping(patience, cfg.early_stopping.threshold)
        if train and patience is not None
        else None,
        guard=read_guard(cfg.get("guard")),
        data=data,
        eval_data=eval_data,
        model=cfg.model,
        guide=cfg.get("guide"),
        miner=cfg.get("miner"),
        mine=cfg.get("mine"),
        training=cfg.training,
        hardware=cfg.hardware,
        tracking=cfg.tracking,
        seed=cfg.seed,
        smoke=bool(cfg.smoke),
        name=str(cfg.name),
        baseline_reuse=bool(cfg.get("baseline_reuse")),
        leaves=config_leaves(cfg),
    )


def config_leaves(cfg: DictConfig) -> dict[str, Any]:
    """Every leaf of the composed config but Hydra's own node: dot path -> resolved value (a list, an empty
    mapping and null are leaves)."""
    plain = {
        str(key): OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        for key, node in ((key, cfg[key]) for key in cfg if key != "hydra")
    }
    leaves: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else str(key))
        else:
            leaves[path] = node

    walk(plain, "")
    return leaves


def read_evaluators(evaluators: DictConfig | None, eval_data: DataSource, data: DataSpec) -> tuple[EvaluatorSpec, ...]:
    """``evaluators``, in the order they were selected (``evaluators=[sts,ir]``); the metric names each logs
    come from its class (``catalogue.logged_metrics``)."""
    specs: dict[str, EvaluatorSpec] = {}
    for key, node in (evaluators or {}).items():
        name = str(node.name)
        if name in specs:
            raise PipelineError(
                f"evaluators.{key}: an evaluator named {name!r} is already configured: drop one of them "
                f"or rename it with evaluators.{key}.name=OTHER."
            )
        arguments = OmegaConf.create(OmegaConf.to_container(node.evaluator, resolve=True))  # a copy, not struct
        primary, logged = catalogue.logged_metrics(OmegaConf.to_container(arguments), str(key))
        specs[name] = EvaluatorSpec(
            name=name,
            key=f"evaluators.{key}",
            arguments=arguments,
            columns=tuple(str(c) for c in node.columns),
            splits=tuple(str(s) for s in node.splits),
            primary_metric=str(node.get("primary_metric") or primary),
            metrics=logged,
            label=node.get("label"),
            score_range=tuple(node.score_range) if node.get("score_range") is not None else None,
            corpus=(node.corpus or eval_data.corpus) if "corpus" in node else None,
            prompts=evaluator_prompts(data, list(node.columns)),
        )
    return tuple(specs.values())


def splits_needed(
    evaluators: tuple[EvaluatorSpec, ...], evaluate: bool, during_training: bool
) -> dict[str, tuple[str, ...]]:
    """Split -> the evaluators that score it: each evaluator's ``splits`` when the evaluate stage runs,
    and every evaluator on ``dev`` when the trainer evaluates during training."""
    needed: dict[str, list[str]] = {}
    if evaluate:
        for spec in evaluators:
            for split in spec.splits:
                needed.setdefault(split, []).append(spec.name)
    if during_training:
        dev = needed.setdefault("dev", [])
        dev += [spec.name for spec in evaluators if spec.name not in dev]
    return {split: tuple(names) for split, names in needed.items()}


def read_loss(loss: DictConfig, train: bool) -> LossSpec:
    """The loss's class name, its arguments and Matryoshka; whether it takes a guide (when training)."""
    from hydra.utils import get_class

    dims, weights = loss.get("matryoshka_dims"), loss.get("matryoshka_weights")
    return LossSpec(
        arguments=OmegaConf.create({k: v for k, v in loss.items() if k not in LOSS_OPTIONS}),
        class_name=str(loss._target_).rsplit(".", 1)[-1],
        needs_guide=train and "guide" in inspect.signature(get_class(loss._target_)).parameters,
        matryoshka_dims=tuple(dims) if dims is not None else None,
        matryoshka_weights=tuple(weights) if weights is not None else None,
        gathers_across_devices=bool(loss.get("gather_across_devices")),
    )


def evaluator_prompts(data: DataSpec, columns: list[str]) -> tuple[str | None, ...]:
    """The prompt of each of an evaluator's text columns: the train column's in the same position."""
    texts = data.text_columns
    count = len([c for c in columns if c not in LABEL_COLUMNS])
    return tuple(data.prompts.get(texts[i]) if i < len(texts) else None for i in range(count))


def read_guard(guard: DictConfig | None) -> GuardSettings | None:
    """The guard's settings (checked: ``settings.Guard``), or None when ``guard.enabled`` is false."""
    if guard is None or not guard.enabled:  # None: a config composed without the declared guard node
        return None
    return GuardSettings(**{f.name: guard[f.name] for f in fields(GuardSettings)})

"""Config checks that need no data and no model: they answer in well under a second.

``check_config`` reads the job spec (``pipeline.stages.spec``) and raises :class:`pipeline.PipelineError`
naming the key and the fix: stages, mine options, training values, Matryoshka, prompts, LoRA, the
optimized metric, the loss's columns, early stopping, the guide, registration, and the hardware profile
(through ``pipeline.runtime.packing`` and ``pipeline.runtime.hardware``, which own those keys' values).
Checks that need more live where it exists: data checks (columns, cells, scores) with the reading code
in ``pipeline.stages.load``, checks against the loaded model in ``pipeline.stages.build``, the library's
own checks of ``training.*`` in ``pipeline.stages.train``, the tracking target in ``pipeline.tracking.store``.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from pipeline import PipelineError
from pipeline.runtime import hardware, packing
from pipeline.stages.spec import EvaluatorSpec, JobSpec, LossSpec, metric_names, train_layout, train_sets
from pipeline.stages.splits import LABEL_COLUMNS

STAGES = ("load", "mine", "train", "evaluate")

# What each loss trains on: (min text columns, max text columns, needs a label column).
# From the losses' docstrings ("Inputs" tables) in sentence-transformers.
LOSS_INPUTS: dict[str, tuple[int, int | None, bool]] = {
    "MultipleNegativesRankingLoss": (2, None, False),
    "CachedMultipleNegativesRankingLoss": (2, None, False),
    "MultipleNegativesSymmetricRankingLoss": (2, 2, False),
    "GISTEmbedLoss": (2, 3, False),
    "CachedGISTEmbedLoss": (2, 3, False),
    "CoSENTLoss": (2, 2, True),
    "AnglELoss": (2, 2, True),
    "CosineSimilarityLoss": (2, 2, True),
    "TripletLoss": (3, 3, False),
}


def check_config(spec: JobSpec) -> None:
    """Every config check that needs no data and no model, over the job spec (``spec.read_spec``)."""
    stages = list(spec.stages.names)
    unknown = [s for s in stages if s not in STAGES]
    in_order = [s for s in STAGES if s in stages] == stages and ("mine" not in stages or "train" in stages)
    if unknown or not stages or stages[0] != "load" or not in_order:
        raise PipelineError(
            f"stages={stages}: stages run in the order load, mine, train, evaluate and start with load (mine only "
            "before train); e.g. stages=[load,evaluate] or stages=[load,mine,train,evaluate]."
        )
    if spec.stages.mine:
        if spec.data.get("train_sets"):
            raise PipelineError(
                "the mine stage mines one train set; data.train_sets names several: drop mine from stages."
            )
        check_mine_options(spec.mine, train_layout(spec.data), str(spec.data.name))
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed < 2**32:
        raise PipelineError(f"seed={spec.seed!r}: a whole number 0 .. {2**32 - 1} (numpy's seed range), e.g. seed=42.")
    _check_training(spec.training)
    for key in ("model", "guide", "miner"):
        length = (getattr(spec, key) or {}).get("max_seq_length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise PipelineError(
                f"{key}.max_seq_length={length!r}: a whole number of tokens >= 1, or null (the model's)."
            )
    _check_matryoshka(spec.loss, spec.model)
    _check_prompts(spec.data)
    _check_peft(spec.model)
    check_optimized_metric(spec.optimized_metric, spec.evaluators, spec.loss.matryoshka_dims)
    if spec.stages.train:
        _check_loss_columns(spec)
        _check_early_stopping(spec)
        _check_guide(spec)
    if spec.tracking.register_as and not (spec.tracking.log_model and spec.stages.train):
        raise PipelineError(
            "tracking.register_as registers the trained model: it needs tracking.log_model=true and a train stage."
        )
    if spec.stages.evaluate and not spec.evaluators and not spec.stages.train:
        raise PipelineError(
            "stages=[load,evaluate] with evaluator=none evaluates nothing: pick evaluator=sts, triplet or ir."
        )
    packing.switch(spec.hardware)  # hardware.packing / packing_row_length
    hardware.check_profile(spec.hardware)  # a CUDA device for cuda profiles; machines and processes add up


def _check_training(training: DictConfig) -> None:
    for key in ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size"):
        value = training.get(key)
        if value is None or not isinstance(value, (int, float)) or value <= 0:
            raise PipelineError(f"training.{key}={value!r}: must be a positive number.")
    for key in ("max_steps", "num_train_epochs"):
        if key in training and (isinstance(training[key], bool) or not isinstance(training[key], (int, float))):
            raise PipelineError(
                f"training.{key}={training[key]!r}: must be a number (max_steps=-1 trains num_train_epochs epochs)."
            )
    if training.max_steps == 0 or (training.max_steps < 0 and training.num_train_epochs <= 0):
        raise PipelineError(
            f"training.max_steps={training.max_steps} with training.num_train_epochs={training.num_train_epochs}: "
            "nothing would train; set max_steps > 0 or num_train_epochs > 0."
        )
    if str(training.eval_strategy) == "steps" and not training.get("eval_steps"):
        raise PipelineError("training.eval_strategy=steps needs training.eval_steps (a number of steps).")


def _check_loss_columns(spec: JobSpec) -> None:
    name = spec.loss.class_name
    if name not in LOSS_INPUTS:
        return
    low, high, needs_label = LOSS_INPUTS[name]
    data_name = spec.data.name
    for set_name, (data, key) in train_sets(spec.data).items():
        columns = train_layout(data) if data.get("train_columns") else []
        columns += ["negative"] if spec.stages.mine else []  # the mine stage adds one
        texts = [c for c in columns if c not in LABEL_COLUMNS]
        labels = [c for c in columns if c in LABEL_COLUMNS]
        shape = f"{low}" if low == high else f"{low}+" if high is None else f"{low}-{high}"
        if len(texts) < low or (high is not None and len(texts) > high) or bool(labels) != needs_label:
            need = f"{shape} text columns" + (" and a score/label column" if needs_label else " and no label column")
            which = repr(data_name) if set_name == "train" else f"{data_name!r} (train set {set_name!r})"
            raise PipelineError(
                f"loss {name} needs {need}; data {which} trains on {columns} "
                f"({key}.train_columns): pick a loss for that layout (cosent for scored pairs, mnrl for pairs "
                "or triplets, triplet for triplets) or another data config."
            )


def _check_early_stopping(spec: JobSpec) -> None:
    if spec.early_stopping is None:
        return
    patience, threshold = spec.early_stopping.patience, spec.early_stopping.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise PipelineError(f"early_stopping.threshold={threshold!r}: a number >= 0 (0: any improvement counts).")
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise PipelineError(f"early_stopping.patience={patience!r}: must be a whole number of evaluations >= 1.")
    if not spec.evaluators:
        raise PipelineError(
            "early_stopping.patience is set but evaluator=none: the best model is picked by the dev evaluator's "
            "optimized_metric; pick an evaluator (evaluator=sts, evaluator=triplet) or unset early_stopping.patience."
        )
    if not spec.evaluates_during_training:
        raise PipelineError(
            "early_stopping.patience is set but training.eval_strategy=no: set training.eval_strategy=steps "
            "training.eval_steps=N (evaluations to compare), or unset early_stopping.patience."
        )
    if not spec.optimized_metric:
        raise PipelineError(
            "early_stopping.patience is set but optimized_metric is null: the best model is picked by it; "
            "set optimized_metric to a dev metric (e.g. sts-dev_spearman_cosine)."
        )  # that it is a dev metric some evaluator logs: check_optimized_metric, above


def _check_guide(spec: JobSpec) -> None:
    if spec.loss.needs_guide and not spec.guide:
        raise PipelineError(
            f"loss {spec.loss.class_name} needs a guide model: set guide=minilm (or another model option)."
        )


def _check_matryoshka(loss: LossSpec, model: DictConfig) -> None:
    """``loss.matryoshka_dims``: whole numbers, largest first, within the model's size where the config
    says it (``model.architecture.hidden_size``; otherwise checked once the model loads)."""
    if loss.matryoshka_dims is None:
        return
    dims = list(loss.matryoshka_dims)
    whole = all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
    if not dims or not whole or any(a <= b for a, b in zip(dims, dims[1:])):
        raise PipelineError(
            f"loss.matryoshka_dims={dims}: list positive whole dimensions, largest first and each smaller than the "
            "one before, e.g. loss.matryoshka_dims=[384,256,128,64]."
        )
    size = (model.get("architecture") or {}).get("hidden_size")
    if size and dims[0] > size:
        raise PipelineError(
            f"loss.matryoshka_dims={dims}: {dims[0]} is larger than the model's embedding dimension {size} "
            f"(model.architecture.hidden_size): use dimensions up to {size}."
        )
    weights = loss.matryoshka_weights
    if weights is not None and (
        len(weights) != len(dims) or any(not isinstance(w, (int, float)) or w <= 0 for w in weights)
    ):
        raise PipelineError(
            f"loss.matryoshka_weights={list(weights)}: give one positive weight per dimension of "
            f"loss.matryoshka_dims={dims} (or null: 1 each)."
        )


def _check_prompts(data: DictConfig) -> None:
    """``data.prompts``: train column -> prompt text, for columns the loss trains on."""
    prompts = data.get("prompts")
    if prompts is None:
        return
    columns = list(dict.fromkeys(c for set_cfg, _ in train_sets(data).values() for c in set_cfg.train_columns))
    texts = [c for c in columns if c not in LABEL_COLUMNS]
    if not isinstance(prompts, DictConfig):
        raise PipelineError(
            f"data.prompts={prompts!r}: map train columns to prompts, e.g. data.prompts={{{texts[0]}:'query: '}}."
        )
    for column, prompt in prompts.items():
        if column not in texts:
            raise PipelineError(
                f"data.prompts.{column}: {column!r} is not a text column data {data.name!r} trains on; its columns "
                f"are {texts}: key the prompt by one of them."
            )
        if not isinstance(prompt, str) or not prompt:
            raise PipelineError(f"data.prompts.{column}={prompt!r}: a prompt is a non-empty string, e.g. 'query: '.")


def _check_peft(model: DictConfig) -> None:
    """``model.peft``: a LoRA rank >= 1, a positive alpha, a dropout in [0, 1), module names."""
    peft = model.get("peft") or {}
    if peft.get("r") is None:
        return
    r, alpha, dropout, targets = peft.get("r"), peft.get("alpha"), peft.get("dropout"), peft.get("target_modules")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise PipelineError(f"model.peft.r={r!r}: the LoRA rank is a whole number >= 1 (e.g. 8), or null for none.")
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise PipelineError(f"model.peft.alpha={alpha!r}: a positive number (e.g. 16; the scale is alpha / r).")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise PipelineError(f"model.peft.dropout={dropout!r}: a probability in [0, 1).")
    if targets is not None and (isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets)):
        raise PipelineError(
            f"model.peft.target_modules={targets!r}: a list of module names, e.g. [query,value], or null for peft's default."
        )


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


def check_mine_options(mine_cfg: DictConfig, train_columns: list[str], data_name: str) -> None:
    """Config checks (no data, no model): the layout has an anchor and a positive; the range fits."""
    if len(train_columns) != 2:
        raise PipelineError(
            f"the mine stage needs (anchor, positive) pairs; data {data_name!r} trains on {train_columns}: "
            "drop mine from stages, or pick a data config with two text columns."
        )
    for key, low in (("range_min", 0), ("range_max", 1), ("num_negatives", 1), ("batch_size", 1)):
        value = mine_cfg[key]
        if not (key == "range_max" and value is None) and (
            isinstance(value, bool) or not isinstance(value, int) or value < low
        ):
            raise PipelineError(
                f"mine.{key}={value!r}: a whole number >= {low}{' or null' if key == 'range_max' else ''}."
            )
    low, high, wanted = int(mine_cfg.range_min), mine_cfg.range_max, int(mine_cfg.num_negatives)
    if wanted < 1 or (high is not None and int(high) - low < wanted):
        raise PipelineError(
            f"mine.range_max={high} with mine.range_min={low} leaves {None if high is None else int(high) - low} "
            f"candidates, fewer than mine.num_negatives={wanted}: raise range_max or lower num_negatives (>= 1)."
        )
    if mine_cfg.corpus not in ("split", "positives"):
        raise PipelineError(f"mine.corpus={mine_cfg.corpus!r}: use split (every text of the train file) or positives.")
    age = mine_cfg.cache_max_age_days
    if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0):
        raise PipelineError(
            f"mine.cache_max_age_days={age!r}: a number of days >= 0 (0 mines afresh every time), or null to keep "
            "mined sets until mine.cache_dir is cleared."
        )

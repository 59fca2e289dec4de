"""Config checks that need no data and no model: they answer in well under a second.

``check_config`` raises :class:`pipeline.PipelineError` naming the key and the fix. Data checks
(columns, cells, scores) live with the reading code in ``pipeline.stages.load``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipeline import PipelineError
from pipeline.runtime import hardware, packing
from pipeline.stages.evaluators import evaluator_specs
from pipeline.stages.load import train_layout, train_sets
from pipeline.stages.mine import check_options
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


def check_config(cfg: DictConfig) -> None:
    stages = list(cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    in_order = [s for s in STAGES if s in stages] == stages and ("mine" not in stages or "train" in stages)
    if unknown or not stages or stages[0] != "load" or not in_order:
        raise PipelineError(
            f"stages={stages}: stages run in the order load, mine, train, evaluate and start with load (mine only "
            "before train); e.g. stages=[load,evaluate] or stages=[load,mine,train,evaluate]."
        )
    if "mine" in stages:
        if cfg.data.get("train_sets"):
            raise PipelineError(
                "the mine stage mines one train set; data.train_sets names several: drop mine from stages."
            )
        check_options(cfg.mine, train_layout(cfg.data), str(cfg.data.name))
    training = cfg.training
    for key in ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size"):
        value = training.get(key)
        if value is None or not isinstance(value, (int, float)) or value <= 0:
            raise PipelineError(f"training.{key}={value!r}: must be a positive number.")
    for key in ("max_steps", "num_train_epochs"):
        if key in training and (isinstance(training[key], bool) or not isinstance(training[key], (int, float))):
            raise PipelineError(
                f"training.{key}={training[key]!r}: must be a number (max_steps=-1 trains num_train_epochs epochs)."
            )
    if training.get("max_steps", -1) in (0,) or (
        training.get("max_steps", -1) < 0 and training.get("num_train_epochs", 1) <= 0
    ):
        raise PipelineError(
            f"training.max_steps={training.get('max_steps')} with training.num_train_epochs={training.get('num_train_epochs')}: "
            "nothing would train; set max_steps > 0 or num_train_epochs > 0."
        )
    if str(training.get("eval_strategy", "no")) == "steps" and not training.get("eval_steps"):
        raise PipelineError("training.eval_strategy=steps needs training.eval_steps (a number of steps).")
    if "train" in stages:
        _check_loss_columns(cfg)
    if "evaluate" in stages and not evaluator_specs(cfg) and "train" not in stages:
        raise PipelineError(
            "stages=[load,evaluate] with evaluator=none evaluates nothing: pick evaluator=sts, triplet or ir."
        )
    packing.switch(cfg.hardware)  # hardware.packing / packing_row_length
    hardware.check_profile(cfg.hardware)  # a CUDA device for cuda profiles; machines and processes add up


def _check_loss_columns(cfg: DictConfig) -> None:
    name = str(cfg.loss._target_).rsplit(".", 1)[-1]
    if name not in LOSS_INPUTS:
        return
    low, high, needs_label = LOSS_INPUTS[name]
    for set_name, (data, key) in train_sets(cfg.data).items():
        columns = train_layout(data) if data.get("train_columns") else []
        columns += ["negative"] if "mine" in cfg.stages else []  # the mine stage adds one
        texts = [c for c in columns if c not in LABEL_COLUMNS]
        labels = [c for c in columns if c in LABEL_COLUMNS]
        shape = f"{low}" if low == high else f"{low}+" if high is None else f"{low}-{high}"
        if len(texts) < low or (high is not None and len(texts) > high) or bool(labels) != needs_label:
            need = f"{shape} text columns" + (" and a score/label column" if needs_label else " and no label column")
            which = repr(cfg.data.name) if set_name == "train" else f"{cfg.data.name!r} (train set {set_name!r})"
            raise PipelineError(
                f"loss {name} needs {need}; data {which} trains on {columns} "
                f"({key}.train_columns): pick a loss for that layout (cosent for scored pairs, mnrl for pairs "
                "or triplets, triplet for triplets) or another data config."
            )

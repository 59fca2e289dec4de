"""Divergence and collapse guard: stop a training run that has gone bad, and fail it honestly.

Checks, while the trainer runs (``guard.*`` in the config):
- the training loss at every logging step is finite, and so is the gradient norm, except where fp16's
  GradScaler skips a step by design (an overflow: non-finite ``grad_norm``, finite loss, the scale
  then halved): with ``training.fp16`` such steps trip only after ``guard.nonfinite_patience``
  consecutive logged steps;
- every metric of an in-training evaluation is finite;
- the loss of an in-batch-negatives loss (MNRL and its cached variant) does not sit at its chance
  value, ln(number of candidates), for ``guard.chance_patience`` steps (the signature of
  embeddings collapsed to a constant: every candidate scores the same);
- every ``guard.collapse_every`` steps and at each evaluation, a few fixed, unrelated sentences do
  not embed to (nearly) the same vector.

On a trip the guard stops training before the step's checkpoint is written (the last checkpoint
stays the last good one); the job then raises :class:`TrainingStopped`, so the run ends FAILED with
the reason as the ``failure_reason`` tag and ``guard.step`` / ``guard.check`` tags, and no model is
logged. Writes to MLflow: the ``guard.*`` tags only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pipeline import PipelineError
from pipeline.runtime import catalogue
from pipeline.tracking import set_tags

log = logging.getLogger(__name__)

# Unrelated sentences: a healthy model never embeds them all to the same direction.
PROBE_SENTENCES = (
    "The cat sleeps on the warm windowsill.",
    "Interest rates rose for the third quarter in a row.",
    "Add two cups of flour and stir until smooth.",
    "The striker scored twice in the second half.",
)


class TrainingStopped(PipelineError):
    """The guard stopped training: the loss, gradients, metrics or embeddings went bad."""


@dataclass(frozen=True)
class Trip:
    check: str  # non_finite, chance_loss, collapse
    step: int
    reason: str


def chance_loss(
    loss_class: str, train_columns: list[str], batch_size: int, ranks: int = 1, matryoshka_scale: float = 1.0
) -> float | None:
    """ln(candidates per anchor) for losses whose chance level it is (``runtime.catalogue``), None for others.

    ``ranks``: the ranks whose candidates each anchor sees (the world size with ``gather_across_devices``,
    else 1); ``matryoshka_scale``: the
    sum of MatryoshkaLoss's weights (its loss is the weighted sum of the loss at each dimension)."""
    if catalogue.loss(loss_class).chance != catalogue.LN_CANDIDATES:
        return None
    candidate_columns = max(len(train_columns) - 1, 1)
    return matryoshka_scale * math.log(batch_size * ranks * candidate_columns)


@dataclass(frozen=True)
class GuardSettings:
    """``guard.*`` of the config (see ``conf/config.yaml``)."""

    chance_patience: int
    nonfinite_patience: int
    chance_tolerance: float
    collapse_every: int
    collapse_similarity: float


def non_finite(values: dict, keys=None) -> str | None:
    """The first of ``keys`` (default: all) whose value is a non-finite number, or None."""
    for key in keys or list(values):
        value = values.get(key)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return key
    return None


def collapse(model, similarity: float) -> Trip | None:
    """Encode the probe sentences; a Trip (step 0: the caller sets it) when they are not finite or
    embed alike (lowest pairwise cosine at or above ``similarity``)."""
    import torch

    was_training = model.training
    try:
        with torch.no_grad():
            vectors = model.encode(list(PROBE_SENTENCES), convert_to_tensor=True, show_progress_bar=False).float()
    finally:
        model.train(was_training)
    if not torch.isfinite(vectors).all():
        return Trip("non_finite", 0, "embeddings of the probe sentences are not finite")
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    lowest = float((unit @ unit.T)[~torch.eye(len(unit), dtype=torch.bool)].min())
    if lowest >= similarity or float(vectors.norm(dim=-1).max()) == 0.0:
        reason = f"embeddings collapsed to a constant (lowest cosine similarity between unrelated probe sentences {lowest:.6f})"
        return Trip("collapse", 0, reason)
    return None


def raise_if_tripped(guard) -> None:
    """Tag the run with what tripped and raise :class:`TrainingStopped` (no-op when all is well)."""
    if guard is None or guard.trip is None:
        return
    trip = guard.trip
    set_tags({"guard.check": trip.check, "guard.step": str(trip.step)})  # rank 0 owns the run; other ranks only stop
    raise TrainingStopped(
        f"training stopped at step {trip.step}: {trip.reason}. The model was not logged; the last checkpoint "
        "before this step is kept. Lower training.learning_rate, raise training.warmup_steps or check the "
        "data (guard.* sets the checks)."
    )

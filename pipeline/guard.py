"""Divergence and collapse guard: stop a training run that has gone bad, and fail it honestly.

Checks, while the trainer runs (``guard.*`` in the config):
- the training loss and the gradient norm at every logging step are finite;
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

from omegaconf import DictConfig

from pipeline import PipelineError
from pipeline.hardware import world_size

log = logging.getLogger(__name__)

# Unrelated sentences: a healthy model never embeds them all to the same direction.
PROBE_SENTENCES = (
    "The cat sleeps on the warm windowsill.",
    "Interest rates rose for the third quarter in a row.",
    "Add two cups of flour and stir until smooth.",
    "The striker scored twice in the second half.",
)
# Losses whose value, when every candidate scores the same, is ln(candidates per anchor).
IN_BATCH_NEGATIVES = ("MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss")


class TrainingStopped(PipelineError):
    """The guard stopped training: the loss, gradients, metrics or embeddings went bad."""


@dataclass(frozen=True)
class Trip:
    check: str  # non_finite, chance_loss, collapse
    step: int
    reason: str


def chance_loss(loss_cfg: DictConfig, train_columns: list[str], batch_size: int) -> float | None:
    """ln(candidates per anchor) for in-batch-negatives losses, None for other losses."""
    name = str(loss_cfg.get("_target_", "")).rsplit(".", 1)[-1]
    if name not in IN_BATCH_NEGATIVES:
        return None
    candidate_columns = max(len(train_columns) - 1, 1)
    ranks = world_size() if loss_cfg.get("gather_across_devices") else 1  # candidates gathered from every rank
    return math.log(batch_size * ranks * candidate_columns)


def make_guard(guard_cfg: DictConfig | None, model, chance: float | None):
    """The TrainerCallback for ``guard.*`` (None when ``guard.enabled`` is false)."""
    from transformers import TrainerCallback

    if guard_cfg is None or not guard_cfg.get("enabled", True):
        return None
    patience = int(guard_cfg.get("chance_patience", 100))
    tolerance = float(guard_cfg.get("chance_tolerance", 1e-3))
    every = int(guard_cfg.get("collapse_every", 50))
    similarity = float(guard_cfg.get("collapse_similarity", 0.99999))

    class TrainingGuard(TrainerCallback):
        def __init__(self) -> None:
            self.trip: Trip | None = None
            self._chance_since: int | None = None

        def _stop(self, control, check: str, step: int, reason: str) -> None:
            if self.trip is None:
                self.trip = Trip(check, step, reason)
                log.error("Guard: %s at step %d: stopping training", reason, step)
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or self.trip is not None:
                return
            for key in ("loss", "grad_norm"):
                value = logs.get(key)
                if isinstance(value, (int, float)) and not math.isfinite(value):
                    self._stop(control, "non_finite", state.global_step, f"{key} is {value}")
                    return
            loss = logs.get("loss")
            if chance is not None and patience > 0 and isinstance(loss, (int, float)):
                if abs(loss - chance) <= tolerance:
                    self._chance_since = self._chance_since if self._chance_since is not None else state.global_step
                    if state.global_step - self._chance_since >= patience:
                        self._stop(control, "chance_loss", state.global_step,
                                   f"loss stuck at its chance value ln(candidates)={chance:.4f} since step {self._chance_since}")
                else:
                    self._chance_since = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            bad = [k for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not math.isfinite(v)]
            if bad:
                self._stop(control, "non_finite", state.global_step, f"evaluation metric {bad[0]} is {metrics[bad[0]]}")
            elif self.trip is None:
                self._check_collapse(state, control)

        def on_step_end(self, args, state, control, **kwargs):
            if every > 0 and state.global_step % every == 0 and self.trip is None:
                self._check_collapse(state, control)

        def _check_collapse(self, state, control) -> None:
            import torch

            was_training = model.training
            try:
                with torch.no_grad():
                    vectors = model.encode(list(PROBE_SENTENCES), convert_to_tensor=True, show_progress_bar=False).float()
            finally:
                model.train(was_training)
            if not torch.isfinite(vectors).all():
                self._stop(control, "non_finite", state.global_step, "embeddings of the probe sentences are not finite")
                return
            unit = torch.nn.functional.normalize(vectors, dim=-1)
            cosine = unit @ unit.T
            lowest = float(cosine[~torch.eye(len(unit), dtype=torch.bool)].min())
            if lowest >= similarity or float(vectors.norm(dim=-1).max()) == 0.0:
                self._stop(control, "collapse", state.global_step,
                           f"embeddings collapsed to a constant (lowest cosine similarity between unrelated probe sentences {lowest:.6f})")

    return TrainingGuard()


def raise_if_tripped(guard) -> None:
    """Tag the run with what tripped and raise :class:`TrainingStopped` (no-op when all is well)."""
    if guard is None or guard.trip is None:
        return
    import mlflow

    trip = guard.trip
    if mlflow.active_run() is not None:  # rank 0 owns the run; other ranks only stop
        mlflow.set_tags({"guard.check": trip.check, "guard.step": str(trip.step)})
    raise TrainingStopped(
        f"training stopped at step {trip.step}: {trip.reason}. The model was not logged; the last checkpoint "
        "before this step is kept. Lower training.learning_rate, raise training.warmup_steps or check the "
        "data (guard.* sets the checks)."
    )

"""The trainer callbacks the job hands to ``SentenceTransformerTrainer``: one class each, one job each.

- :class:`MLflowMetrics`: every trainer log (loss, learning rate, grad norm, ``eval_*``) as metrics;
- :class:`StartupTime`: metrics ``startup_seconds`` (process start) and ``job_seconds_to_first_step`` (job
  start) to the first training step;
- :class:`Checkpoints`: commits each saved checkpoint; a signal becomes a checkpoint and a stop;
- :class:`TrainingGuard`: stops a run whose loss, gradients, metrics or embeddings went bad;
- :class:`WhenReady`: one action, at the first step's end at which work running beside training is done;
- :class:`ProgressLines`: where the output is not a terminal (CI, files), one plain line per logging
  step instead of the trainer's progress bar (which it keeps on a terminal).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from pipeline.runtime import checkpoint, process_clock
from pipeline.runtime.guard import GuardSettings, Trip, collapse, non_finite
from pipeline.tracking import flush, log_metrics

log = logging.getLogger(__name__)


class MLflowMetrics(TrainerCallback):
    """Every numeric value of every trainer log, at its step, into the job's run (rank 0)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = {key: float(value) for key, value in logs.items() if isinstance(value, (int, float))}
        log_metrics(values, step=state.global_step, synchronous=False)


class StartupTime(TrainerCallback):
    """``startup_seconds``: from the job's process start (the launcher's, with several ranks) to step 1, on
    the clock of ``process_clock`` (no step of the wall clock moves it);
    ``job_seconds_to_first_step``: from the job's own start (``job_started``, a ``time.perf_counter()``)
    to step 1, which in a sequential sweep is not the process's start for jobs 2..N."""

    def __init__(self, job_started: float) -> None:
        self.job_started = job_started

    def on_step_begin(self, args, state, control, **kwargs):  # once per optimizer step
        if state.global_step == 0 and state.is_world_process_zero:
            seconds, job_seconds = process_clock.seconds_since_start(), time.perf_counter() - self.job_started
            log.info(
                "First training step %.1f s after the job started (%.1f s after the process)", job_seconds, seconds
            )
            log_metrics({"startup_seconds": seconds, "job_seconds_to_first_step": job_seconds}, synchronous=False)


class WhenReady(TrainerCallback):
    """Calls ``action`` once, at the end of the first step at which ``ready()`` is true: work running in
    a thread beside training (the leakage audit) is reported as soon as it is done, without training
    waiting for it. The job calls the action itself after training when no step found it ready."""

    def __init__(self, ready: Callable[[], bool], action: Callable[[], None]) -> None:
        self.ready, self.action, self.acted = ready, action, False

    def on_step_end(self, args, state, control, **kwargs):
        if not self.acted and self.ready():
            self.acted = True
            self.action()


class Checkpoints(TrainerCallback):
    """Commits each checkpoint the trainer saved; a stop request (first Ctrl-C / SIGTERM) becomes a
    checkpoint at the step's end and a stop (``stopped_at``)."""

    def __init__(self) -> None:
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        checkpoint.begin_training()

    def on_step_end(self, args, state, control, **kwargs):
        if checkpoint.stop_requested(args.device if args.world_size > 1 else None):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                flush()  # the run holds every metric up to a checkpoint before it counts
                checkpoint.commit(folder, state.global_step)


class TrainingGuard(TrainerCallback):
    """The checks of ``guard.*`` (see :mod:`pipeline.runtime.guard`); ``trip`` says what stopped it."""

    def __init__(self, settings: GuardSettings, model, chance: float | None) -> None:
        self.settings = settings
        self.model = model
        self.chance = chance
        self.trip: Trip | None = None
        self._chance_since: int | None = None
        self._skipped = 0  # consecutive logged fp16 steps the GradScaler skipped (finite loss, inf grad_norm)

    def _stop(self, control, trip: Trip, step: int) -> None:
        if self.trip is None:
            self.trip = Trip(trip.check, step, trip.reason)
            log.error("Guard: %s at step %d: stopping training", trip.reason, step)
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or self.trip is not None:
            return
        bad = non_finite(logs, ("loss", "grad_norm"))
        if bad == "grad_norm" and getattr(args, "fp16", False):  # a GradScaler skip, unless it persists
            self._skipped += 1
            patience = self.settings.nonfinite_patience
            log.warning(
                "Guard: grad_norm is %s at step %d (fp16 step skipped by the GradScaler)", logs[bad], state.global_step
            )
            if self._skipped < patience:
                return
            reason = f"grad_norm is {logs[bad]} for {self._skipped} consecutive logged steps (guard.nonfinite_patience={patience})"
            self._stop(control, Trip("non_finite", 0, reason), state.global_step)
            return
        self._skipped = 0
        if bad:
            self._stop(control, Trip("non_finite", 0, f"{bad} is {logs[bad]}"), state.global_step)
            return
        loss, patience = logs.get("loss"), self.settings.chance_patience
        if self.chance is None or patience <= 0 or not isinstance(loss, (int, float)):
            return
        if abs(loss - self.chance) > self.settings.chance_tolerance:
            self._chance_since = None
            return
        self._chance_since = self._chance_since if self._chance_since is not None else state.global_step
        if state.global_step - self._chance_since >= patience:
            reason = f"loss stuck at its chance value ln(candidates)={self.chance:.4f} since step {self._chance_since}"
            self._stop(control, Trip("chance_loss", 0, reason), state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        bad = non_finite(metrics or {})
        if bad:
            self._stop(control, Trip("non_finite", 0, f"evaluation metric {bad} is {metrics[bad]}"), state.global_step)
        elif self.trip is None:
            self._check_collapse(state, control)

    def on_step_end(self, args, state, control, **kwargs):
        every = self.settings.collapse_every
        if every > 0 and state.global_step % every == 0 and self.trip is None:
            self._check_collapse(state, control)

    def _check_collapse(self, state, control) -> None:
        trip = collapse(self.model, self.settings.collapse_similarity)
        if trip is not None:
            self._stop(control, trip, state.global_step)


class ProgressLines(TrainerCallback):
    """One line per logging step: ``step 40/200 (20%) loss 1.2345 lr 1.8e-05 | 12 s, about 48 s left``."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not state.max_steps:
            return
        step, total = state.global_step, state.max_steps
        elapsed = time.monotonic() - self.started
        if "train_runtime" in logs:  # the trainer's closing log
            print(
                f"trained {step} steps in {elapsed:.0f} s, mean loss {_number(logs.get('train_loss', float('nan')))}",
                file=self.stream,
            )
            return
        shown = " ".join(
            f"{key} {_number(value)}"
            for key, value in logs.items()
            if isinstance(value, (int, float)) and key != "epoch"
        )
        left = f", about {elapsed / step * (total - step):.0f} s left" if 0 < step < total else ""
        print(
            f"step {step}/{total} ({100 * step // total}%) {shown} | {elapsed:.0f} s{left}",
            file=self.stream,
            flush=True,
        )


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

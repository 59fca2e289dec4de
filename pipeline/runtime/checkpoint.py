"""Checkpoints that can be trusted, and a clean stop on Ctrl-C / SIGTERM.

- The trainer writes ``checkpoint-N`` folders (``training.save_strategy`` / ``save_steps``;
  ``save_total_limit`` rotation keeps the latest and, with ``metric_for_best_model``, the best).
  A checkpoint counts only once it holds a ``COMMITTED`` marker, written atomically (temp file +
  rename) after the trainer finished every file of it and the run's buffered metrics were written:
  a checkpoint cut short by a crash is never picked up, and :func:`latest_checkpoint` removes such
  leftovers.
- The first SIGINT / SIGTERM during training asks for a stop at the next step boundary: a
  checkpoint is written, metrics are flushed, and the job raises ``KeyboardInterrupt`` so the run
  ends KILLED. A second signal (or one outside training) interrupts at once. With several ranks,
  the launcher forwards one SIGTERM to the ranks (started in their own session, so a terminal's
  Ctrl-C does not reach them twice) and the ranks agree on the step to stop at.

The trainer callback that commits checkpoints is ``pipeline.runtime.callbacks.Checkpoints``. Writes
nothing to MLflow (the job tags ``checkpoint.dir``, where ``pipeline.resume`` finds the checkpoints).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "COMMITTED"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

_training = threading.Event()
_stop_requested = threading.Event()


def handle_signal(signum, frame) -> None:
    """Signal handler: first signal in training stops cleanly at the next step; else interrupt now."""
    if _training.is_set() and not _stop_requested.is_set():
        _stop_requested.set()
        log.warning(
            "Signal %d: stopping after this step (checkpoint, then the run ends KILLED); send it again to stop now",
            signum,
        )
        return
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle_signal)


def commit(folder: Path, step: int) -> None:
    """Mark a fully written checkpoint folder as usable (atomic: temp file, then rename)."""
    temporary = folder / f".{MARKER}.tmp"
    temporary.write_text(json.dumps({"step": step}), encoding="utf-8")
    os.replace(temporary, folder / MARKER)


def latest_checkpoint(folder: Path | str) -> Path | None:
    """The committed ``checkpoint-N`` with the highest N; uncommitted leftovers are deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in folder.iterdir():
        match = CHECKPOINT.match(child.name)
        if not match or not child.is_dir():
            continue
        if (child / MARKER).is_file():
            found.append((int(match.group(1)), child))
        else:
            log.warning("Removing %s: an incomplete checkpoint (no %s marker)", child, MARKER)
            shutil.rmtree(child, ignore_errors=True)
    return max(found)[1] if found else None


def training_options(options: dict, optimized_metric: str | None) -> dict:
    """Defaults the pipeline adds to ``training.*``: honest loss logs and best-checkpoint tracking."""
    options.setdefault("logging_nan_inf_filter", False)  # a NaN loss is logged as NaN, not hidden
    saves_and_evaluates = str(options["save_strategy"]) != "no" and str(options["eval_strategy"]) != "no"
    if saves_and_evaluates and not options.get("metric_for_best_model") and optimized_metric:
        options["metric_for_best_model"] = f"eval_{optimized_metric}"
    return options


def begin_training() -> None:
    """Training starts: the first signal from now on asks for a stop at the next step boundary."""
    _stop_requested.clear()
    _training.set()


def stop_requested(device=None) -> bool:
    """A stop was asked for, here or (with several ranks, ``device`` given) on any rank: every rank
    then stops at the same step, so none waits in a collective for a rank that stopped."""
    import torch.distributed as dist

    requested = _stop_requested.is_set()
    if device is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return requested
    import torch

    flag = torch.tensor([int(requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one tiny collective per step
    return bool(flag.item())


@contextmanager
def training() -> Iterator[None]:
    """Around ``trainer.train()``: however it ends (returned, raised), a signal after it interrupts
    at once again, in this job and in the next job of a sweep."""
    try:
        yield
    finally:
        _training.clear()


def raise_if_stopped(callback) -> None:
    """After training: a stop request becomes ``KeyboardInterrupt`` (the run ends KILLED)."""
    if callback is not None and callback.stopped_at is not None:
        _stop_requested.clear()
        raise KeyboardInterrupt(f"stopped by a signal after step {callback.stopped_at} (checkpoint written)")

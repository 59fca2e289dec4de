"""Python's cyclic garbage collector held off while a job starts, and what start-up made kept out of its scans.

Start-up imports torch, transformers, sentence-transformers, MLflow and SQLAlchemy and builds the model:
about a million objects that live as long as the process. CPython's collector runs every few hundred
allocations and, now and then, scans every old object again, so the longer start-up goes the slower each
import gets. Three calls around a job:

- :func:`pause` as a command starts (``cli.run_command``: every ``python -m pipeline...`` and each rank;
  ``start_job`` too, for the jobs of a sweep and callers in Python): no automatic collection; objects
  are still freed by reference counting, only cycles wait. A command that runs no job (``compare``,
  ``runs``, ``promote``) stays paused to its end: they are short (``compare`` 2.1 -> 1.6 s, same memory);
- :func:`settle` once the model is built, before the first step: what start-up made is frozen
  (``gc.freeze``: never scanned again, training's own objects are) and collections resume;
- :func:`release` as the job ends: frozen objects are the collector's again, and it is as the job
  found it. What start-up froze may have become garbage with the job (its config, its copy of the
  model): the next job of the process (a sweep's) collects it before pausing again, once (a full
  collection: 0.3-0.5 s with the libraries loaded), so no job's garbage outlives the next job's start.

Nothing here changes a result (no cache key holds it). ``PIPELINE_GC_PAUSE=0`` leaves the collector
as Python set it (to compare, or if a start-up ever makes enough cyclic garbage to matter).
"""

from __future__ import annotations

import gc
import os

ENV = "PIPELINE_GC_PAUSE"

_state = {"paused": False, "frozen": False, "released": False}


def pause() -> None:
    """No automatic collection until :func:`settle` (a no-op when already paused or turned off); after an
    earlier job's :func:`release`, what it left is collected first."""
    if os.environ.get(ENV, "1") == "0" or _state["paused"] or not gc.isenabled():
        return
    if _state["released"]:
        gc.collect()
    gc.disable()
    _state.update(paused=True, released=False)


def settle() -> None:
    """Start-up is over: freeze what it made and let the collector run again."""
    if not _state["paused"]:
        return
    gc.freeze()
    gc.enable()
    _state.update(paused=False, frozen=True)


def release() -> None:
    """The job is over: frozen objects are the collector's again; a pause still on is lifted."""
    if _state["frozen"]:
        gc.unfreeze()
    if _state["paused"]:
        gc.enable()
    _state.update(paused=False, frozen=False, released=True)

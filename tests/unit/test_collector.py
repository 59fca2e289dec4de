"""The garbage collector held off through a job's start-up (``pipeline.runtime.collector``)."""

from __future__ import annotations

import gc
import weakref

import pytest

from pipeline.runtime import collector


@pytest.fixture(autouse=True)
def collector_as_found():
    enabled = gc.isenabled()
    yield
    collector.release()
    gc.enable() if enabled else gc.disable()


def test_paused_until_settled_then_frozen_until_released():
    kept = [[object()] for _ in range(100)]  # objects start-up made
    collector.pause()
    assert not gc.isenabled()
    collector.pause()  # a second command layer (entry point, then start_job): still one pause
    collector.settle()
    assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
    collector.settle()  # once only: what training makes is the collector's
    collector.release()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_release_lifts_a_pause_that_never_settled():
    collector.pause()  # a job that failed before its model was built
    collector.release()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(collector.ENV, "0")
    collector.pause()
    assert gc.isenabled()
    collector.settle()
    assert gc.get_freeze_count() == 0


def test_a_collector_the_user_turned_off_stays_off():
    gc.disable()
    collector.pause()
    collector.settle()
    collector.release()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_what_a_job_froze_and_left_is_collected_before_the_next_job_pauses():
    collector.pause()
    config = Node()  # made during start-up (a job's config: OmegaConf nodes point at their parents)
    alive = weakref.ref(config)
    collector.settle()
    del config
    gc.collect()
    assert alive() is not None  # frozen: no collection frees it while the job runs
    collector.release()
    collector.pause()  # the sweep's next job
    assert alive() is None

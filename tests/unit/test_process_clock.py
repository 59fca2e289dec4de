"""A process's start and age on the boot clock (``pipeline.runtime.process_clock``): what ``startup_seconds``
and ``pipeline.resume``'s liveness check read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline.runtime import process_clock

pytestmark = pytest.mark.skipif(not process_clock._proc(), reason="the boot clock and /proc are Linux's")
TICK = 1 / os.sysconf("SC_CLK_TCK")


def test_a_process_age_fits_inside_its_life_seen_from_outside():
    """psutil's start time adds the boot time rounded down to the second: here it read 0.65 s early."""
    env = {k: v for k, v in os.environ.items() if k != process_clock.LAUNCHER_STARTED_ENV}
    code = "from pipeline.runtime import process_clock; print(process_clock.seconds_since_start())"
    before = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    outside = time.perf_counter() - before
    inside = float(out.stdout)
    assert 0.0 < inside <= outside + TICK + 1e-3, (inside, outside)


def test_ranks_count_from_their_launcher(monkeypatch):
    monkeypatch.setenv(process_clock.LAUNCHER_STARTED_ENV, str(process_clock.now() - 30.0))
    assert 30.0 <= process_clock.seconds_since_start() < 31.0


def test_the_liveness_check_tells_the_job_process_by_its_start_tick_not_the_wall_clock():
    tags = process_clock.owner_tags()
    assert process_clock.owner_alive(tags) is True
    # a step of the wall clock moves psutil's start time by the step: the job is still the same process
    assert process_clock.owner_alive({**tags, "process.started": str(float(tags["process.started"]) + 120)}) is True
    boot, start = tags["process.identity"].split("/")
    later = f"{boot}/{float(start) + TICK:.2f}"  # the same pid, started a tick later: another process
    assert process_clock.owner_alive({**tags, "process.identity": later}) is False
    legacy = {k: v for k, v in tags.items() if k != "process.identity"}  # a run logged before the tag
    assert process_clock.owner_alive(legacy) is True


def test_a_finished_process_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tags = {
            "process.host": socket.gethostname(),
            "process.pid": str(child.pid),
            "process.identity": process_clock.identity(child.pid),
        }
        assert process_clock.owner_alive(tags) is True
    finally:
        child.kill()
        child.wait()
    assert process_clock.owner_alive(tags) is False

"""When a process started, on a clock that steps of the wall clock do not move; which process runs a job.

A run's ``startup_seconds`` (process start to the first training step) and ``pipeline.resume``'s check
that a run's process is gone both need a process's start time. ``psutil.Process().create_time()`` is the
kernel's start tick added to the boot time in wall-clock seconds, rounded down to the second (``btime``
of ``/proc/stat``). So it reads up to 1 s early (0.65 s on the machine of BENCHMARKS.md), and it moves
with every step of the wall clock (NTP, a paused virtual machine), by the step.

On Linux this module reads the start tick itself (``/proc/PID/stat``) and compares it with
``CLOCK_BOOTTIME``, the clock that tick counts on: exact to a tick (10 ms), whatever the wall clock does.
Elsewhere it falls back to psutil's start time and the wall clock. A run's ``process.*`` tags
(:func:`owner_tags`) name its process by this start; :func:`owner_alive` tells ``pipeline.resume`` whether
it still runs. Imports nothing of the pipeline.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

# Set by the launcher for its ranks: its own start on this clock (``startup_seconds`` counts from it).
LAUNCHER_STARTED_ENV = "PIPELINE_LAUNCHER_STARTED"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def _proc() -> bool:
    """Linux: the boot clock and ``/proc`` both there."""
    return hasattr(time, "CLOCK_BOOTTIME") and Path("/proc/self/stat").exists()


def now() -> float:
    """Seconds on the clock :func:`started` reads: since boot on Linux, else the wall clock."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if _proc() else time.time()


def started(pid: int | None = None) -> float:
    """When process ``pid`` (this one by default) started, on :func:`now`'s clock; ``OSError`` when there
    is no such process."""
    if _proc():
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted from the state (field 3)
        return ticks / os.sysconf("SC_CLK_TCK")
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error as error:
        raise OSError(f"no process {pid}") from error


def seconds_since_start() -> float:
    """Seconds since this job's process started; with several ranks, since their launcher did."""
    return now() - float(os.environ.get(LAUNCHER_STARTED_ENV) or started())


def identity(pid: int | None = None) -> str | None:
    """A process's boot and start tick (``BOOT-ID/SECONDS``): another process with the same pid, later or
    after a reboot, has another. None where there is no ``/proc``."""
    if not _proc():
        return None
    return f"{BOOT_ID.read_text().strip()}/{started(pid):.2f}"


def owner_tags() -> dict[str, str]:
    """Who runs the job: host, process id, its start time, and (Linux) its boot and start tick, which
    ``pipeline.resume`` compares to tell the job's process from a later one with the same pid."""
    import socket

    import psutil

    tags = {
        "process.host": socket.gethostname(),
        "process.pid": str(os.getpid()),
        "process.started": f"{psutil.Process().create_time():.3f}",
    }
    own = identity()
    return {**tags, "process.identity": own} if own else tags


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by :func:`owner_tags` still runs: None when it ran on another host
    (or the run has no such tags), where this machine cannot tell."""
    import socket

    import psutil

    if tags.get("process.host") != socket.gethostname() or not tags.get("process.pid", "").isdigit():
        return None
    pid = int(tags["process.pid"])
    if "process.identity" in tags and identity() is not None:
        try:  # the same pid with another start tick (or boot) is not the job; no wall clock involved
            return identity(pid) == tags["process.identity"]
        except (OSError, ValueError, IndexError):
            return False
    try:  # a run logged without the identity tag: psutil's start time, which a wall-clock step moves
        created = psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return False
    return abs(created - float(tags.get("process.started", 0))) < 1.0

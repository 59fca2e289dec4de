"""Follow the composed config through one job: every call of a ``pipeline`` function that receives the
config, a node of it, a part of the job spec (``pipeline.stages.spec``, ``pipeline.stages.dataspec``) or a
value resolved from the config (the hardware profile's ``Machine`` and its ``Precision``), in the order they
happen. Calls into the spec modules count too (``read_spec``, ``read_data``...), but not the spec's parts
answering about themselves (their methods and properties).

Measured, not read from the source: a function that takes the whole config under any parameter name
is seen. ``tests/e2e/test_config_walk.py`` holds the rules; ``python -m tests.walk [overrides]`` prints
the walk of ``python -m pipeline [overrides]`` (calls, modules, stays, the stage modules' stays and the
functions that took the whole config). Another checkout's walk: ``PYTHONPATH=CHECKOUT python
tests/walk.py [overrides]`` from this one (the file imports nothing of the pipeline's tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

SPEC_MODULES = ("pipeline.stages.spec", "pipeline.stages.dataspec")
# Values resolved from the config once, in preflight, and passed on in its place.
RESOLVED = {"pipeline.runtime.hardware.Machine", "pipeline.runtime.hardware.Precision"}
ROOT_KEYS = {"training", "hardware", "data"}


@dataclasses.dataclass(frozen=True)
class Call:
    module: str
    function: str
    whole: bool  # the whole composed config, not a node or a spec part


def is_whole(value: Any) -> bool:
    return isinstance(value, DictConfig) and value._get_parent() is None and set(value.keys()) >= ROOT_KEYS


def is_part(value: Any) -> bool:
    if isinstance(value, DictConfig):
        root = value
        while root._get_parent() is not None:
            root = root._get_parent()
        return is_whole(root)
    if isinstance(value, (tuple, list)) and value:
        return is_part(value[0])
    kind = type(value)
    return kind.__module__ in SPEC_MODULES or f"{kind.__module__}.{kind.__qualname__}" in RESOLVED


def follow(command: Callable[[], Any], start: str = "pipeline.job.run_job") -> list[Call]:
    """The calls that receive the config while ``command`` runs, from the first call of ``start`` on."""
    calls: list[Call] = []
    started = {"value": False}

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("pipeline"):
            return
        code = frame.f_code
        if not started["value"]:
            started["value"] = f"{module}.{code.co_name}" == start
            if not started["value"]:
                return
        if module in SPEC_MODULES and "." in code.co_qualname:
            return  # the spec answering about itself (its properties and methods): not a step of the walk
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals.get(name) for name in names]
        if any(is_whole(v) for v in values):
            calls.append(Call(module, code.co_qualname, True))
        elif any(is_part(v) for v in values):
            calls.append(Call(module, code.co_qualname, False))

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        command()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return calls


def stays(calls: list[Call]) -> list[str]:
    """The modules the walk is in, one entry per stay (consecutive calls in one module are one stay)."""
    walk: list[str] = []
    for call in calls:
        if not walk or walk[-1] != call.module:
            walk.append(call.module)
    return walk


def stage_stays(calls: list[Call]) -> list[str]:
    """The walk's stays in ``pipeline.stages`` modules, the calls in other modules (the job, the
    runtime's helpers, tracking) left out."""
    return stays([c for c in calls if c.module.startswith("pipeline.stages.")])


def main(overrides: list[str]) -> None:
    """Print the walk of ``python -m pipeline OVERRIDES`` run in this process."""
    from pipeline import REPO_ROOT
    from pipeline.__main__ import main as pipeline_main

    sys.argv = [str(REPO_ROOT / "pipeline" / "__main__.py"), *overrides]
    pipeline_main.__wrapped__.__module__ = "__main__"  # Hydra finds conf/ beside the file, as for python -m

    def command():
        with contextlib.suppress(SystemExit):
            pipeline_main()

    calls = follow(command)
    walk = stays(calls)
    print(f"{len(calls)} calls, {len(set(walk))} modules, {len(walk)} stays")
    print(" -> ".join(m.removeprefix("pipeline.") for m in walk))
    stages = stage_stays(calls)
    print(f"stage modules: {len(stages)} stays: " + " -> ".join(m.removeprefix("pipeline.stages.") for m in stages))
    whole = sorted({f"{c.module}.{c.function}" for c in calls if c.whole})
    print("whole config:", ", ".join(whole))


if __name__ == "__main__":
    main(sys.argv[1:])

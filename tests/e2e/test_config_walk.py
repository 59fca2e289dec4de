"""The composed config's walk through a job, measured (``tests/walk.py``: every call of a ``pipeline``
function that receives the config, a node of it, a part of the job spec or the resolved machine): no
function below the job receives the whole config except the listed ones, whatever its parameter is named;
the stage modules are reached in the order the job runs them, each in at most two stretches of the whole
walk; the hardware profile is resolved once (preflight) and read from the resolved machine after, and the
walk stays within its measured length."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.unit.test_layout import COMMAND_MODULES, WHOLE_CONFIG_ALLOWED
from tests.walk import follow, stage_stays, stays

# Stage modules in the order a job first reaches them: the job spec read once (spec.read_spec: every declared
# value checked by settings, the data nodes read by dataspec), the config checks, the data, the training
# arguments (checked by the library before any model loads), then the model, evaluators and loss;
# the mine stage after them (it mines with the built model).
ORDER = ["spec", "settings", "dataspec", "spec", "validate", "load", "train", "build", "mine"]


# The walk's stays (consecutive calls in one module are one stay) as measured: a change that lengthens the
# walk fails here; lower a bound when a change shortens it. Issue 29's target: under 35 (65 before it).
MAX_STAYS = {"sts": 26, "mined-ir": 26}
# Stretches of the whole walk in one stage module: build's second is after packing the models it loaded.
MAX_STAGE_STRETCHES = 2
# runtime.hardware: preflight (device check, the machine resolved), training (attention, loss region) and
# the final evaluation (autocast).
MAX_HARDWARE_VISITS = 3


@pytest.mark.parametrize(
    "name,overrides",
    [("sts", ("debug=smoke",)), ("mined-ir", ("experiment=trecqa_mined", "debug=smoke", "tracking.log_model=false"))],
    ids=["sts", "mined-ir"],
)
def test_each_stage_module_is_visited_once_and_only_listed_functions_take_the_whole_config(run_job, name, overrides):
    calls = follow(lambda: run_job(*overrides))
    below_job = {
        f"{c.module}.{c.function}"
        for c in calls
        if c.whole and not (c.module.count(".") == 1 and c.module.split(".")[1] in COMMAND_MODULES)
    }
    assert below_job <= WHOLE_CONFIG_ALLOWED, f"take the whole config: {sorted(below_job - WHOLE_CONFIG_ALLOWED)}"
    walk = [m.removeprefix("pipeline.stages.") for m in stage_stays(calls)]
    assert walk == [m for m in ORDER if m in walk], f"stage modules visited: {' -> '.join(walk)}"
    assert {"validate", "load", "build"} <= set(walk)
    whole = stays(calls)
    path = " -> ".join(m.removeprefix("pipeline.") for m in whole)
    visits = Counter(whole)
    stretched = {m: n for m, n in visits.items() if m.startswith("pipeline.stages.") and n > MAX_STAGE_STRETCHES}
    assert not stretched, f"stage modules in more than {MAX_STAGE_STRETCHES} stretches {stretched}: {path}"
    assert visits["pipeline.runtime.hardware"] <= MAX_HARDWARE_VISITS, f"runtime.hardware visited again: {path}"
    assert len(whole) <= MAX_STAYS[name], f"{len(whole)} stays (at most {MAX_STAYS[name]}): {path}"

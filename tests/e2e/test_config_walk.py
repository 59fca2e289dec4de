"""The composed config's walk through a job, measured (``tests/walk.py``: every call of a ``pipeline``
function that receives the config, a node of it or a part of the job spec): no function below the job
receives the whole config except the listed ones, whatever its parameter is named; each stage module
is visited in one stretch, in the order the job runs them."""

from __future__ import annotations

import pytest

from tests.unit.test_layout import COMMAND_MODULES, WHOLE_CONFIG_ALLOWED
from tests.walk import follow, stage_stays

# Stage modules in the order a job first reaches them: the config checks, the data, the training
# arguments (checked by the library before any model loads), then the model, evaluators and loss;
# the mine stage after them (it mines with the built model).
# First, inside spec.read_spec: every declared value checked (settings), the leakage audit's settings read.
ORDER = ["settings", "leakage", "validate", "load", "train", "build", "mine"]


@pytest.mark.parametrize(
    "overrides",
    [("debug=smoke",), ("experiment=trecqa_mined", "debug=smoke", "tracking.log_model=false")],
    ids=["sts", "mined-ir"],
)
def test_each_stage_module_is_visited_once_and_only_listed_functions_take_the_whole_config(run_job, overrides):
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

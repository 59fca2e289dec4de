"""The one grouping rule (``pipeline.tracking.grouping``): every param but the seed and its copies equal."""

from __future__ import annotations

from pipeline.tracking import grouping


def test_runs_differing_only_in_the_seed_and_its_copies_are_one_configuration():
    runs = [
        {"loss._target_": "MNRL", "seed": "1", "training.seed": "1", "lr": "1e-5"},
        {"loss._target_": "MNRL", "seed": "2", "training.seed": "2", "lr": "1e-5"},
        {
            "loss._target_": "GIST",
            "seed": "1",
            "training.seed": "1",
            "lr": "1e-5",
        },  # another group: no swept param says so
        {"loss._target_": "MNRL", "seed": "3", "training.seed": "3", "lr": "1e-5", "loss.guide": "x"},  # one more key
    ]
    configs = grouping.configurations(runs)
    assert configs[0] == configs[1] and len(set(configs)) == 3
    assert grouping.folded_keys(runs) == {"seed", "training.seed"}
    assert grouping.differing(configs) == ["loss._target_", "loss.guide"]
    assert dict(configs[0]) == {"loss._target_": "MNRL", "lr": "1e-5", "loss.guide": None}


def test_a_param_equal_to_the_seed_in_only_some_runs_is_no_copy():
    runs = [{"seed": "1", "data.seed": "1"}, {"seed": "2", "data.seed": "1"}]
    assert grouping.folded_keys(runs) == {"seed"}
    assert len(set(grouping.configurations(runs))) == 1
    assert grouping.configurations([{"seed": "1", "x": float("nan")}]) == [(("x", None),)]

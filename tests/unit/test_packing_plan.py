"""Row plans for packed batches and the ``hardware.packing`` switch: no model needed."""

from __future__ import annotations

import random

import pytest

from pipeline import PipelineError
from pipeline.runtime.packing import plan_rows


def _check(plan, lengths: list[int]) -> None:
    """Every sentence placed once, inside its row, and no two sentences overlap."""
    used: dict[int, list[tuple[int, int]]] = {}
    for index, length in enumerate(lengths):
        row, offset = plan.row_of[index], plan.offset_of[index]
        assert 0 <= row < plan.rows and offset + length <= plan.width
        used.setdefault(row, []).append((offset, offset + length))
    for spans in used.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert len(used) == plan.rows  # no empty row


@pytest.mark.parametrize("row_length", [16, 64, 128, 512])
def test_plans_place_every_sentence_without_overlap_and_beat_padding(row_length):
    rng = random.Random(row_length)
    lengths = [rng.randint(3, 60) for _ in range(64)]
    plan = plan_rows(lengths, row_length)
    _check(plan, lengths)
    assert sum(lengths) <= plan.rows * plan.width <= len(lengths) * max(lengths)
    if row_length >= 64:  # rows of several sentences waste under 15 % of the packed tokens here
        assert plan.rows * plan.width < 1.15 * sum(lengths)


def test_a_sentence_longer_than_the_row_gets_a_row_of_its_own_length():
    plan = plan_rows([256, 10, 12], row_length=128)
    _check(plan, [256, 10, 12])
    # rows hold max(row_length, longest) = 256 tokens: the long sentence fills one, the others share a second
    assert (plan.rows, plan.width) == (2, 256)
    assert plan.row_of[1] == plan.row_of[2] != plan.row_of[0]


def test_a_single_sentence_is_one_row_of_its_length():
    plan = plan_rows([7], row_length=128)
    assert (plan.rows, plan.width, plan.row_of, plan.offset_of) == (1, 7, [0], [0])


def packing_of(overrides: list[str]) -> tuple[str, int]:
    """``hardware.packing`` and ``packing_row_length`` as the resolved machine holds them."""
    from pipeline.runtime.hardware import resolve_machine
    from tests.conftest import compose_config

    cfg = compose_config(overrides)
    machine = resolve_machine(cfg.hardware, cfg.training)
    return machine.packing, machine.packing_row_length


@pytest.mark.parametrize(
    "value,expected", [("auto", "auto"), ("true", "true"), ("false", "false"), ("'false'", "false")]
)
def test_switch_accepts_auto_true_false(value, expected):
    assert packing_of([f"hardware.packing={value}", "hardware.packing_row_length=64"]) == (expected, 64)


def test_every_profile_sets_packing_in_its_yaml():
    """hardware.packing / packing_row_length come from each profile's YAML: no default in the code."""
    profiles = ("cpu", "cpu_ddp", "gpu", "multi_gpu", "multi_node")
    got = {profile: packing_of([f"hardware={profile}"]) for profile in profiles}
    assert got == {"cpu": ("auto", 32), "cpu_ddp": ("auto", 32)} | dict.fromkeys(profiles[2:], ("auto", 128))


@pytest.mark.parametrize(
    "override,message",
    [
        ("hardware.packing=sometimes", "hardware.packing='sometimes': one of auto, true, false"),
        ("hardware.packing_row_length=0", "hardware.packing_row_length=0: a whole number of tokens >= 1"),
        ("hardware.packing_row_length=long", "hardware.packing_row_length='long': a whole number of tokens >= 1"),
    ],
)
def test_switch_rejects_bad_values_naming_the_key(override, message):
    from pipeline.stages.settings import check_values
    from tests.conftest import compose_config

    with pytest.raises(PipelineError, match=message):
        check_values(compose_config([override]))

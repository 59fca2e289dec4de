"""Dropout masks from 16-bit slices (``pipeline.runtime.dropout``, ``hardware.dropout_masks``): torch's
dropout in distribution and kept values, reproducible from the seed, its gradient the mask, routed only
while the loss region is entered, and only where it applies (a CPU, training, 0 < p < 1)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.runtime import hardware
from pipeline.runtime.dropout import LEVELS, BitsMasks, dropout
from tests.conftest import compose_config


class Draws(TorchDispatchMode):
    """Counts the generator's operators: ``bernoulli_`` (torch's masks) and ``random_`` (the bits)."""

    def __init__(self) -> None:
        super().__init__()
        self.bernoulli = self.random = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.bernoulli += name == "bernoulli_"
        self.random += name == "random_"
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_drop_p_and_keep_torchs_values(dtype):
    x = torch.rand(1_000_000, dtype=dtype) + 0.5
    torch.manual_seed(0)
    out = dropout(x, p=0.1)
    kept = out != 0
    # binomial, n = 1e6: the kept share's standard deviation is 0.0003
    assert abs(kept.float().mean().item() - (1 - 6554 / LEVELS)) < 0.0015
    theirs = F.dropout(x, p=0.1)  # torch's kept values: the input times the inverse kept share, in dtype
    scale = LEVELS / (LEVELS - 6554)
    assert torch.equal(out[kept], (x[kept] * 1).mul_(scale))
    assert abs(theirs[theirs != 0].float().div(x[theirs != 0].float()).mean() - 1 / 0.9) < 2e-3
    assert out.dtype == dtype and out.shape == x.shape


def test_the_seed_gives_the_same_masks_and_the_gradient_is_the_mask():
    x = torch.ones(4, 33, 7, requires_grad=True)  # an element count not divisible by 4
    torch.manual_seed(3)
    first = dropout(x, p=0.25)
    torch.manual_seed(3)
    again = dropout(x, p=0.25)
    torch.manual_seed(4)
    other = dropout(x, p=0.25)
    assert torch.equal(first, again) and not torch.equal(first, other)
    first.backward(torch.ones_like(first))
    assert torch.equal(x.grad, first.detach())  # d(x * mask * scale)/dx = mask * scale, and x is ones
    dropped = (first == 0).float().mean().item()
    assert 0.15 < dropped < 0.35


def test_where_it_does_not_apply_torch_runs_its_own():
    x = torch.randn(64, 8)
    assert dropout(x, p=0.1, training=False) is x
    assert torch.equal(dropout(x, p=0.0), x)
    assert torch.equal(dropout(x, p=1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, p=1.5)
    y = x.clone()
    torch.manual_seed(0)
    out = dropout(y, p=0.5, inplace=True)
    assert out is y and 0.3 < (y == 0).float().mean() < 0.7


def test_the_mode_routes_the_models_dropout_while_entered_only():
    layer = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.1))
    x = torch.randn(32, 16)
    with Draws() as plain:
        layer(x)
    with Draws() as bits, BitsMasks():
        layer(x)
        F.dropout(x, 0.1, training=True)  # BERT's eager attention calls the function itself
    with Draws() as after:
        layer(x)
    assert (plain.bernoulli, plain.random) == (1, 0)
    assert (bits.bernoulli, bits.random) == (0, 2)
    assert (after.bernoulli, after.random) == (1, 0)
    layer.eval()
    with Draws() as evaluating, BitsMasks():
        assert torch.equal(layer(x), layer[0](x))
    assert (evaluating.bernoulli, evaluating.random) == (0, 0)


def test_the_loss_region_holds_what_the_profile_asks():
    cfg = compose_config([])
    machine = hardware.resolve_machine(cfg.hardware, cfg.training)
    assert machine.bits_dropout  # the default on a CPU
    fp32 = dataclasses.replace(machine, precision=hardware.Precision("fp32", "fp32", fp16=False, bf16=False))
    bf16 = dataclasses.replace(machine, precision=hardware.Precision("bf16", "bf16", fp16=False, bf16=True))
    x = torch.randn(8, 4)
    for profile in (fp32, bf16):
        with Draws() as draws, hardware.loss_region(profile)():
            F.dropout(x, 0.1, training=True)
        assert (draws.bernoulli, draws.random) == (0, 1)
    assert hardware.loss_region(dataclasses.replace(fp32, bits_dropout=False)) is None
    off = compose_config(["hardware.dropout_masks=null"])
    assert not hardware.resolve_machine(off.hardware, off.training).bits_dropout

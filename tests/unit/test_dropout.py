"""Dropout masks from 16-bit slices (``pipeline.runtime.dropout``, ``hardware.dropout_masks``): torch's
dropout in distribution and kept values, reproducible from the seed, its gradient the mask, given to the
model's dropout modules and BERT's eager attention only while entered (they draw the same way inside a
backward's re-forward: the cached losses' and gradient checkpointing's gradients stay right), and only where
it applies (a CPU, training, 0 < p < 1)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.runtime import hardware
from pipeline.runtime.dropout import ATTENTION, LEVELS, dropout, eager_bert, masks
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
def test_masks_drop_p_and_scale_the_kept_values_by_the_kept_share(dtype):
    x = torch.rand(1_000_000, dtype=dtype) + 0.5
    torch.manual_seed(0)
    out = dropout(x, p=0.1)
    kept = out != 0
    # binomial, n = 1e6: the kept share's standard deviation is 0.0003
    assert abs(kept.float().mean().item() - (1 - 6554 / LEVELS)) < 0.0015
    # each kept value: the input times 65536 / 58982, the product in fp32, rounded to the input's precision
    scale = torch.tensor(LEVELS / (LEVELS - 6554), dtype=torch.float32)
    assert torch.equal(out[kept], (x[kept].float() * scale).to(dtype))
    # torch's: its factor 1 / 0.9 rounded to the input's precision first (bf16: 1.109375)
    theirs = F.dropout(x, p=0.1)
    factor = torch.tensor(1 / 0.9, dtype=torch.float32).to(dtype).float()
    assert torch.equal(theirs[theirs != 0], (x[theirs != 0].float() * factor).to(dtype))
    both = kept & (theirs != 0)
    lower = (theirs[both] < out[both]).float().mean().item()  # one unit in the last place, where rounding differs
    assert 0.2 < lower < 0.35 if dtype == torch.bfloat16 else lower > 0.99  # fp32: 6.8e-6 apart, every value
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


def test_the_models_dropout_modules_draw_bits_while_entered_only():
    layer = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.1))
    x = torch.randn(32, 16)
    with Draws() as plain:
        layer(x)
    with Draws() as bits, masks(layer, True):
        layer(x)
        F.dropout(x, 0.1, training=True)  # a function call (BERT's eager attention) keeps torch's masks
    with Draws() as after:
        layer(x)
    with Draws() as off, masks(layer, False):
        layer(x)
    assert (plain.bernoulli, plain.random) == (1, 0)
    assert (bits.bernoulli, bits.random) == (1, 1)
    assert (after.bernoulli, after.random) == (off.bernoulli, off.random) == (1, 0)
    assert "forward" not in vars(layer[1])  # the module as it was: nothing left on it
    layer.eval()
    with Draws() as evaluating, masks(layer, True):
        assert torch.equal(layer(x), layer[0](x))
    assert (evaluating.bernoulli, evaluating.random) == (0, 0)


def test_the_profile_decides():
    cfg = compose_config([])
    assert hardware.resolve_machine(cfg.hardware, cfg.training).bits_dropout  # the default on a CPU
    off = compose_config(["hardware.dropout_masks=null"])
    assert not hardware.resolve_machine(off.hardware, off.training).bits_dropout


def test_the_cached_losses_replay_the_same_masks_inside_their_backward():
    """CachedMNRL embeds without gradients first, then again inside the backward (its gradient cache), with
    the generator's state replayed: the backward draws with the same masks as the first pass, or the cached
    gradients would belong to other dropout masks, wrong without a sound. One mini-batch: the same draws in
    the same order as MNRL's two forwards, so the same gradients."""
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from pipeline.runtime.packing import PROBE_SENTENCES
    from pipeline.stages.build import load_model

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    model[0].auto_model.set_attn_implementation("eager")  # as it trains: its attention dropout drawn in there too
    model.train()
    words = " ".join(PROBE_SENTENCES).split()
    anchors, positives = (
        [" ".join(words[i : i + 6]) for i in range(8)],
        [" ".join(words[i + 3 : i + 11]) for i in range(8)],
    )
    columns = [model.preprocess(anchors), model.preprocess(positives)]

    def gradients(loss):
        model.zero_grad()
        torch.manual_seed(0)
        with Draws() as draws, masks(model, True):
            loss([dict(c) for c in columns], None).backward()
        return draws, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    plain_draws, plain = gradients(MultipleNegativesRankingLoss(model))
    cached_draws, cached = gradients(CachedMultipleNegativesRankingLoss(model, mini_batch_size=64))
    # the backward's re-forward drew with the same masks as the first pass: the gradients are MNRL's
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-4)
    assert plain_draws.random > 0 and cached_draws.random == 2 * plain_draws.random  # every mask drawn again
    assert plain_draws.bernoulli == cached_draws.bernoulli == 0  # the attention's masks too, in the re-forward too


def test_the_attention_is_berts_eager_with_its_probabilities_dropout_drawn_in_bits(monkeypatch):
    """While entered, a model that trains with eager attention attends with the registered one: BERT's eager
    attention to the bit where nothing is dropped (padded and packed rows), its probabilities' dropout drawn
    in bits, eager again after. A model attending otherwise (sdpa) is left alone."""
    from pipeline.runtime.packing import PROBE_SENTENCES, Packer
    from pipeline.stages.build import load_model

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    transformer = model[0].auto_model
    assert eager_bert(model) is None
    with masks(model, True):
        assert transformer.config._attn_implementation == "sdpa"
    transformer.set_attn_implementation("eager")
    assert eager_bert(model) is transformer
    with monkeypatch.context() as other:  # a model whose eager attention is not BERT's code keeps its own
        other.setattr(sys.modules[type(transformer).__module__], "eager_attention_forward", lambda *a, **k: None)
        assert eager_bert(model) is None
    with monkeypatch.context() as other:  # nothing to draw
        other.setattr(transformer.config, "attention_probs_dropout_prob", 0.0)
        assert eager_bert(model) is None
    features = model.preprocess(PROBE_SENTENCES)
    packer = Packer(model[0], row_length=64)

    def embed(packed: bool) -> torch.Tensor:
        if packed:
            packer.attach()
        try:
            return model(dict(features))["token_embeddings"]
        finally:
            packer.detach()

    model.eval()
    eager = [embed(False), embed(True)]
    with masks(model, True):
        assert transformer.config._attn_implementation == ATTENTION
        assert torch.equal(embed(False), eager[0]) and torch.equal(embed(True), eager[1])
        model.train()
        with Draws() as draws:
            dropped = embed(True)
    assert transformer.config._attn_implementation == "eager"
    # one draw per nn.Dropout module: each self-attention's own (unused by the layer, its p read) by the attention
    assert draws.bernoulli == 0 and draws.random == sum(type(m) is torch.nn.Dropout for m in transformer.modules())
    assert not torch.allclose(dropped, eager[1])


def test_gradient_checkpointing_replays_the_same_masks_in_its_re_forward():
    """With gradient checkpointing the encoder layers run again inside the backward, the generator's state
    replayed: the modules' and the attention's bits must come out the same, or the gradients would belong
    to other masks. Equal to the gradients without checkpointing, every mask drawn twice."""
    from pipeline.runtime.packing import PROBE_SENTENCES
    from pipeline.stages.build import load_model

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    transformer = model[0].auto_model
    transformer.set_attn_implementation("eager")  # as it trains on a CPU: the attention's masks in bits too
    model.train()
    features = model.preprocess(PROBE_SENTENCES)

    def gradients():
        model.zero_grad()
        torch.manual_seed(0)
        with Draws() as draws, masks(model, True):
            model(dict(features))["sentence_embedding"].pow(2).sum().backward()
        return draws, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    plain_draws, plain = gradients()
    transformer.activation_checkpointing_enable()
    checkpointed_draws, checkpointed = gradients()
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)
    assert plain_draws.bernoulli == checkpointed_draws.bernoulli == 0
    assert checkpointed_draws.random > plain_draws.random  # the layers' masks drawn again in the re-forward

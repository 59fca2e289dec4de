"""The training step's speed settings on the tiny BERT. ``hardware.cast_weights_once``: the real trainer
with MNRL (one forward per text column), counted with a dispatch mode, against the trainer's own
casting: half the weight casts, the same update within bf16. ``hardware.training_attention``: eager
attention while training gives the packed loss and gradients of sdpa within bf16, and sdpa returns."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline import PipelineError
from pipeline.runtime import clipping, hardware
from pipeline.runtime.packing import PROBE_SENTENCES
from pipeline.stages.build import load_model
from pipeline.stages.settings import check_values
from pipeline.stages.train import train
from tests.conftest import compose_config

BF16 = hardware.Precision("bf16", "bf16", fp16=False, bf16=True)


def machine(*overrides: str, precision: hardware.Precision = BF16) -> hardware.Machine:
    """The default profile with ``overrides``, resolved, running in ``precision``."""
    cfg = compose_config(list(overrides))
    return dataclasses.replace(hardware.resolve_machine(cfg.hardware, cfg.training), precision=precision)


class WeightCasts(TorchDispatchMode):
    """Counts casts to bf16 whose source is one of ``params`` (by storage)."""

    def __init__(self, params) -> None:
        super().__init__()
        self.pointers = {p.data_ptr() for p in params}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16:
            self.count += args[0].data_ptr() in self.pointers
        return func(*args, **kwargs)


def _train(tmp_path, cast_once: bool, steps: int = 2):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    words = PROBE_SENTENCES[1].split()  # 19 words
    rows = {"anchor": [" ".join(words[i : i + 5]) for i in range(8)]}
    rows["positive"] = [" ".join(words[i + 2 : i + 9]) for i in range(8)]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / f"out-{cast_once}"), max_steps=steps, per_device_train_batch_size=8,
        learning_rate=1e-3, bf16=True, use_cpu=True, report_to="none", save_strategy="no", seed=42,
        logging_steps=1, disable_tqdm=True,
    )  # fmt: skip
    profile = machine(f"hardware.cast_weights_once={str(cast_once).lower()}")
    counter = WeightCasts([p for p in model.parameters() if p.ndim == 2])
    with counter:
        result = train(model, MultipleNegativesRankingLoss(model), Dataset.from_dict(rows), args,
                       loss_region=hardware.loss_region(profile))  # fmt: skip
    update = torch.cat([(p.detach() - start[n]).flatten() for n, p in model.named_parameters()])
    return result, counter.count, update


def test_one_weight_cast_per_step_same_update_within_bf16(tmp_path):
    plain, plain_casts, plain_update = _train(tmp_path, cast_once=False)
    once, once_casts, once_update = _train(tmp_path, cast_once=True)
    # MNRL encodes anchor and positive in two forwards: the trainer casts each weight matrix twice a step
    assert plain_casts > 0 and once_casts * 2 == plain_casts
    assert math.isfinite(once.training_loss) and once.global_step == 2
    assert once_update.abs().max() > 1e-4  # the weights moved
    similarity = torch.nn.functional.cosine_similarity(once_update, plain_update, dim=0)
    assert similarity > 0.99, similarity
    assert abs(once.training_loss - plain.training_loss) < 0.02 * abs(plain.training_loss)


def test_cast_weights_once_is_off_in_fp32_and_the_new_keys_are_checked():
    fp32 = hardware.Precision("fp32", "fp32", fp16=False, bf16=False)
    on = machine("hardware.cast_weights_once=true")
    assert hardware.loss_region(dataclasses.replace(on, precision=fp32)) is None
    assert hardware.loss_region(on) is not None
    with pytest.raises(PipelineError, match="hardware.cast_weights_once='sometimes': true or false"):
        check_values(compose_config(["hardware.cast_weights_once=sometimes"]))
    with pytest.raises(PipelineError, match="hardware.training_attention='flash': one of eager"):
        check_values(compose_config(["hardware.training_attention=flash"]))


def _loss_and_grads(model, sentences: list[str]):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model.zero_grad()
    columns = [model.preprocess(sentences[0::2]), model.preprocess(sentences[1::2])]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MultipleNegativesRankingLoss(model)(columns, None)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_eager_training_attention_matches_sdpa_packed_and_returns_to_it():
    from pipeline.runtime import packing

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    model.eval()  # dropout off: both attentions compute the same function
    profile = machine("hardware.training_attention=eager", "hardware.packing=true", "hardware.packing_row_length=32")
    packer = packing.enable(model, profile)
    sentences = [s for s in PROBE_SENTENCES for _ in range(2)] + list(PROBE_SENTENCES[:2])
    sdpa_loss, sdpa_grads = _loss_and_grads(model, sentences)
    with hardware.training_attention(model, profile):
        assert model[0].auto_model.config._attn_implementation == "eager" and packer.eager
        eager_loss, eager_grads = _loss_and_grads(model, sentences)
    assert model[0].auto_model.config._attn_implementation == "sdpa" and not packer.eager
    assert packer.stats.packed_calls >= 4 and math.isfinite(float(eager_loss))
    torch.testing.assert_close(eager_loss, sdpa_loss, atol=2e-2, rtol=2e-2)
    assert torch.nn.functional.cosine_similarity(eager_grads, sdpa_grads, dim=0) > 0.99
    with hardware.training_attention(model, dataclasses.replace(profile, eager_training_attention=False)):
        assert model[0].auto_model.config._attn_implementation == "sdpa"


def _forwards(model) -> list[int]:
    """A counter of ``model``'s forwards (its first module's, the transformer), as a one-item list."""
    calls = [0]
    model[0].register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_merged_forward_embeds_every_column_at_once_with_the_same_loss_and_gradients():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from pipeline.runtime import packing
    from pipeline.runtime.merged_forward import merge_columns
    from pipeline.stages.build import why_not_merged

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    model.eval()  # dropout off: one forward or two compute the same function
    profile = machine("hardware.packing=true", "hardware.packing_row_length=32")
    packer = packing.enable(model, profile)
    assert packer is not None
    sentences = [s for s in PROBE_SENTENCES for _ in range(2)] + list(PROBE_SENTENCES[:2])
    short = [" ".join(s.split()[:6]) for s in sentences[0::2]]
    columns = [model.preprocess(short), model.preprocess(sentences[1::2][::-1])]
    assert columns[0]["input_ids"].shape != columns[1]["input_ids"].shape  # merging pads one column
    calls = _forwards(model)

    def loss_and_grads(loss):
        model.zero_grad()
        value = loss([dict(c) for c in columns], None)
        value.backward()
        return value.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    apart, apart_grads = loss_and_grads(MultipleNegativesRankingLoss(model))
    assert calls[0] == 2
    merged_loss = MultipleNegativesRankingLoss(model)
    assert merge_columns(merged_loss, why_not_merged(profile, packer)) == "on"
    merged, merged_grads = loss_and_grads(merged_loss)
    assert calls[0] == 3  # one forward for both columns
    torch.testing.assert_close(merged, apart, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged_grads, apart_grads, atol=1e-5, rtol=1e-4)


def test_merged_forward_applies_only_where_it_is_the_same_function():
    import inspect

    from sentence_transformers.sentence_transformer import losses

    from pipeline.runtime import catalogue
    from pipeline.runtime.merged_forward import merge_columns
    from pipeline.stages.build import column_prompts, why_not_merged
    from pipeline.stages.spec import read_spec

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    profile, packer = machine(), object()  # a packer: rows are packed
    mnrl = losses.MultipleNegativesRankingLoss(model)
    assert merge_columns(mnrl, why_not_merged(profile, None)).startswith("off: padded batches")
    off = why_not_merged(dataclasses.replace(profile, merged_forward=False), packer)
    assert merge_columns(mnrl, off) == "off: hardware.merged_forward=false"
    off = why_not_merged(dataclasses.replace(profile, accelerator="cuda"), packer)
    assert merge_columns(mnrl, off).startswith("off: cuda")
    # a prompt on some columns: their features differ (prompt_length), and the library embeds them apart
    prompted = read_spec(compose_config(["debug=smoke", "+data.prompts.anchor='query: '"]))
    assert column_prompts(prompted) == {"query: ", None}
    assert merge_columns(mnrl, why_not_merged(profile, packer, column_prompts(prompted))).startswith(
        "off: the text columns take different prompts"
    )
    same = read_spec(compose_config(["debug=smoke", "+data.prompts.anchor='q: '", "+data.prompts.positive='q: '"]))
    assert why_not_merged(profile, packer, column_prompts(same)) is None
    assert "forward" not in vars(mnrl)  # none of those touched the loss
    for other in (losses.CachedMultipleNegativesRankingLoss(model), losses.MatryoshkaLoss(model, mnrl, [8, 4])):
        assert merge_columns(other, why_not_merged(profile, packer)).endswith("embeds its columns its own way")
        assert "forward" not in vars(other)
    # the catalogue's one_forward classes embed with embed_columns and score with compute_loss_from_embeddings,
    # nothing else (a library release that changes one of them fails here)
    marked = [name for name, facts in catalogue.LOSSES.items() if facts.one_forward]
    assert "MultipleNegativesRankingLoss" in marked and "CachedGISTEmbedLoss" not in marked
    for name in marked:
        body = inspect.getsource(getattr(losses, name).forward).split(") -> Tensor:", 1)[1]
        code = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
        assert code == [
            "embeddings = embed_columns(self.model, sentence_features)",
            "return self.compute_loss_from_embeddings(embeddings, labels)",
        ], (name, code)


SKIP_UNIT_CLIP = clipping.skip_unit_clip


class GradientMultiplies(TorchDispatchMode):
    """Counts in-place multiplications of a list of tensors (how torch's clipping scales the gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket is torch.ops.aten._foreach_mul_
        return func(*args, **(kwargs or {}))


def _clipped_training(tmp_path, monkeypatch, skip: bool):
    """The tiny BERT trained 3 steps through ``stages.train`` with the pipeline's clipping or the trainer's,
    ``max_grad_norm`` far above the norms: the weights after, the logged grad norms, how many gradient
    multiplications ran."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    installed = []
    monkeypatch.setattr(clipping, "skip_unit_clip", lambda t: installed.append(skip and SKIP_UNIT_CLIP(t)))
    norms: list[float] = []

    class Norms(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            norms.extend([logs["grad_norm"]] if "grad_norm" in (logs or {}) else [])

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    words = PROBE_SENTENCES[1].split()
    rows = {"anchor": [" ".join(words[i : i + 5]) for i in range(12)]}
    rows["positive"] = [" ".join(words[i + 2 : i + 9]) for i in range(12)]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / f"out-{skip}"), max_steps=3, per_device_train_batch_size=4,
        learning_rate=1e-3, use_cpu=True, report_to="none", save_strategy="no", seed=42, logging_steps=1,
        disable_tqdm=True, max_grad_norm=1e6,
    )  # fmt: skip
    with GradientMultiplies() as multiplies:
        train(model, MultipleNegativesRankingLoss(model), Dataset.from_dict(rows), args, callbacks=[Norms()])
    assert installed == [skip]
    return {n: p.detach().clone() for n, p in model.named_parameters()}, norms, multiplies.count


def test_clipping_skips_multiplying_by_one_and_changes_no_bit(tmp_path, monkeypatch):
    # max_grad_norm far above the norms: torch multiplies by 1.0 every step, the pipeline never
    # (where a step clips, the pipeline runs torch's clipping itself: the test below, at the boundary)
    weights, norms, multiplies = _clipped_training(tmp_path, monkeypatch, skip=False)
    skipped, skipped_norms, skipped_multiplies = _clipped_training(tmp_path, monkeypatch, skip=True)
    assert multiplies >= 3 and skipped_multiplies == 0
    assert len(norms) == 3 and skipped_norms == norms
    assert all(torch.equal(weights[name], skipped[name]) for name in weights)


@pytest.mark.parametrize("norm", [0.5, 1.0 - 1e-7, 1.0, 1.0 + 1e-7, 2.0, float("inf")])
def test_clipping_gives_torchs_gradients_at_the_boundary(norm):
    """``clipping.clip_grad_norm`` against torch's ``clip_grad_norm_``: the same norm and gradients to the bit,
    clipped or not, around max_norm (1.0) where torch's factor ``max_norm / (norm + 1e-6)`` crosses 1."""
    torch.manual_seed(0)
    grads = [torch.randn(7, 5), torch.randn(11)]
    scale = norm / torch.nn.utils.get_total_norm(grads, 2.0).item()
    theirs = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    ours = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for a, b, g in zip(theirs, ours, grads):
        a.grad, b.grad = g * scale, g * scale
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    got = clipping.clip_grad_norm(ours, 1.0)
    same = dict(rtol=0, atol=0, equal_nan=True)  # to the bit (an infinite norm: NaN gradients both ways)
    torch.testing.assert_close(got, expected, **same)
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b.grad, a.grad, **same)

"""Dropout masks drawn 16 bits at a time while training on a CPU (``hardware.dropout_masks=bits``).

torch's CPU dropout draws its keep-mask with ``bernoulli_``: one double from the generator per element,
one thread. On the AVX-512 machine of BENCHMARKS.md that was 14% of the default training step, more than
any operator but the matrix products. :func:`dropout` draws one 64-bit word from the same generator
(``random_`` over the full range) per four elements and keeps an element where its 16-bit slice of the
word is at or above the dropped share of the 65,536 values, then scales the kept values by the exact
inverse of the kept share: 3x less time per mask, forward and backward.

What changes: the draws (a seed still gives the same masks every run); ``p`` is rounded to a multiple of
1/65,536 (0.1 drops 6,554/65,536 = 0.1000061 of the elements); and the scale of the kept values. Each is
the input times the inverse of the kept share (65,536/58,982 for 0.1, 6.8e-6 above torch's 1/0.9), the
product taken in fp32 and rounded to the input's precision. torch rounds its factor to the input's
precision before the product: in bf16 1.109375 for 0.1, so about a quarter of its kept bf16 values lie
one unit in the last place below these.

:func:`masks` gives each ``nn.Dropout`` module of the model (BERT's hidden-state and embedding dropout)
this mask while the job trains (``job.train_stage``), and takes it back after. It acts on the modules, not
on ``torch.nn.functional.dropout``: the cached losses (CachedMNRL, CachedGIST) and gradient checkpointing
run the forward again inside the backward, replaying the generator's state to draw the same masks, and a
module draws the same way wherever it runs, where a torch function mode is not active inside the
backward. The attention probabilities' dropout is a function call inside the model's eager attention:
:func:`attention`, registered with transformers' ``AttentionInterface`` (and its mask function), is BERT's
``eager_attention_forward`` with that call drawing bits. ``masks`` sets it as the model's attention while
entered, for a model that trains with eager attention whose own eager function has BERT's code (RoBERTa,
XLM-R and MiniLM run BERT's; another model keeps its own, with torch's masks). Being the model's attention,
it too runs wherever the model runs. The backward of the masks is autograd's of the multiplications.
Elsewhere (other devices, ``p`` outside (0, 1), evaluation) torch's own runs.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.masking_utils import eager_mask
from transformers.models.bert import modeling_bert

LEVELS = 1 << 16  # the values of a 16-bit slice
ATTENTION = "pipeline_bits_eager"  # the name :func:`attention` is registered under
BERT_EAGER = modeling_bert.eager_attention_forward.__code__  # the eager attention :func:`attention` mirrors


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with a keep-mask from 16-bit slices of the generator's words."""
    if not training or not 0 < p < 1 or input.device.type != "cpu" or input.numel() == 0:
        return F.dropout(input, p, training, inplace)
    count = input.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # 64 random bits each
    dropped = round(p * LEVELS)
    keep = words.view(torch.int16)[:count].view(input.shape) >= dropped - LEVELS // 2
    scale = LEVELS / (LEVELS - dropped)
    mask = keep.to(input.dtype)
    if inplace:
        return input.mul_(mask).mul_(scale)
    return (input * mask).mul_(scale)


_bits = dropout  # :func:`attention`'s own argument is named ``dropout``, as transformers passes it


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """BERT's eager attention, operation for operation, its probabilities' dropout drawn by :func:`dropout`."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = _bits(F.softmax(weights, dim=-1), p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)  # padded batches: eager's additive mask


def _forward(module: torch.nn.Dropout, input: torch.Tensor) -> torch.Tensor:
    return dropout(input, module.p, module.training, module.inplace)


def eager_bert(model) -> PreTrainedModel | None:
    """The model's transformer where it attends eagerly now, with attention dropout, through an eager function
    with the code of BERT's (the one :func:`attention` mirrors), else None."""
    transformer = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    config = getattr(transformer, "config", None)
    if getattr(config, "_attn_implementation", None) != "eager" or not getattr(
        config, "attention_probs_dropout_prob", 0
    ):
        return None
    own = getattr(sys.modules.get(type(transformer).__module__), "eager_attention_forward", None)
    code = getattr(own, "__code__", None)
    if code is None or code.co_code != BERT_EAGER.co_code or code.co_names != BERT_EAGER.co_names:
        return None
    return transformer if transformer._can_set_attn_implementation() else None


@contextlib.contextmanager
def masks(model, enabled: bool) -> Iterator[None]:
    """While entered (and ``enabled``: ``Machine.bits_dropout``), every ``nn.Dropout`` module of ``model``
    draws its masks with :func:`dropout`, and a model of :func:`eager_bert` attends with :func:`attention`;
    as they were after."""
    modules = [m for m in model.modules() if type(m) is torch.nn.Dropout] if enabled else []
    transformer = eager_bert(model) if enabled else None
    for module in modules:
        module.forward = functools.partial(_forward, module)
    if transformer is not None:
        transformer.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        if transformer is not None:
            transformer.set_attn_implementation("eager")
        for module in modules:
            del module.forward

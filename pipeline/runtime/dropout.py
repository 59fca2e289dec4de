"""Dropout masks drawn 16 bits at a time while training on a CPU (``hardware.dropout_masks=bits``).

torch's CPU dropout draws its keep-mask with ``bernoulli_``: one double from the generator per element,
one thread. On the AVX-512 machine of BENCHMARKS.md that was 14% of the default training step, more than
any operator but the matrix products. :func:`dropout` draws one 64-bit word from the same generator
(``random_`` over the full range) per four elements and keeps an element where its 16-bit slice of the
word is at or above the dropped share of the 65,536 values, then scales the kept values by the exact
inverse of the kept share, as torch does: 3x less time per mask, forward and backward.

What changes: the draws (a seed still gives the same masks every run), and ``p`` is rounded to a multiple
of 1/65,536 (0.1 drops 6,554/65,536 = 0.1000061 of the elements). The kept values equal torch's (the
input times the inverse kept share, computed in the input's precision).

:class:`BitsMasks` is a torch function mode that routes ``torch.nn.functional.dropout`` (which
``nn.Dropout`` and BERT's eager attention call) to :func:`dropout` while it is entered: the trainer enters
it around each loss computation (``hardware.loss_region``), so only training forwards use it; the
backward is autograd's of the multiplications. Dropout elsewhere (other devices, ``p`` outside (0, 1),
evaluation) runs torch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LEVELS = 1 << 16  # the values of a 16-bit slice


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


class BitsMasks(TorchFunctionMode):
    """While entered, ``torch.nn.functional.dropout`` is :func:`dropout`; every other call runs as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.dropout:
            return dropout(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))

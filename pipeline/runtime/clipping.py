"""Gradient clipping that skips multiplying every gradient by 1.0, on a CPU.

The trainer clips with torch's ``clip_grad_norm_`` (through Accelerate) every step: the total norm, then
every gradient times ``min(max_norm / (norm + 1e-6), 1)``. torch multiplies even when that factor is 1.0,
so that a GPU never waits for the norm. On a CPU nothing waits, and when the factor is 1.0 the
multiplication changes no bit of any gradient (``x * 1.0 == x`` for every float, NaN and infinities
included). It reads and writes every gradient once more: MiniLM's 22.7M, 3.4 of the 7.2 ms that
clipping takes in a default step (BENCHMARKS.md, issue 31), and most steps of a recipe clip nothing.

:func:`skip_unit_clip` gives the trainer a ``_clip_grad_norm`` that computes the norm as torch does
and multiplies only when the factor is below 1.0, with the factor torch would use: the gradients, the
norm logged as ``grad_norm`` and so every result are those of the trainer's own clipping. It applies
only where the trainer's own would be plain torch clipping over local gradients: on the CPU, without
a gradient scaler (fp16), DeepSpeed, FSDP or sharded gradients; anywhere else the trainer keeps its own.
No cache key holds it: it changes no result.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def skip_unit_clip(trainer) -> bool:
    """Give ``trainer`` (a transformers ``Trainer``) the clipping above where it applies; whether it did."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    plain = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU)
    if accelerator.device.type != "cpu" or not plain or accelerator.scaler is not None:
        return False
    if not all(hasattr(trainer, name) for name in ("_clip_grad_norm", "_has_mixed_mesh_grads")):
        return False  # a transformers whose trainer clips elsewhere: its own clipping, unchanged
    library = trainer._clip_grad_norm

    def clip(model):
        if trainer._has_mixed_mesh_grads(model):
            return library(model)
        return clip_grad_norm(list(model.parameters()), trainer.args.max_grad_norm)

    trainer._clip_grad_norm = clip
    log.info("Clipping: the gradients are multiplied only at a step that clips (torch's factor below 1.0)")
    return True


def clip_grad_norm(parameters: list, max_norm: float):
    """``torch.nn.utils.clip_grad_norm_`` (norm type 2) without the multiplication by a factor of 1.0:
    the same total norm returned and the same gradients after."""
    import torch

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if not bool(float(max_norm) / (total + 1e-6) >= 1.0):  # torch's factor, before its clamp to 1.0
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total

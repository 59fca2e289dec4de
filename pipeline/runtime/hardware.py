"""Glue between the ``hardware`` profile and the trainer: device, threads, ranks and effective precision.

The profile is resolved once, in preflight, into a frozen :class:`Machine` (:func:`resolve_machine`); every
later step reads the machine's fields instead of the profile's values.
A recipe states its intent (``training.fp16``/``bf16``, e.g. a card trained with fp16 on a GPU);
the profile resolves what this machine runs well. Both values are logged as tags
(``precision.intended``, ``precision.effective``), with the world size and the per-device and
global train batch (``world_size``, ``batch.per_device``, ``batch.global``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from pipeline import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    intended: str  # what the recipe asks for: fp16, bf16 or fp32
    effective: str  # what runs here
    fp16: bool
    bf16: bool


@dataclass(frozen=True)
class Machine:
    """The ``hardware`` profile resolved for this machine and job: what the steps after preflight read."""

    accelerator: str  # cpu or cuda
    device: str  # where this process's models live: ``cpu`` or its own GPU (``cuda:LOCAL_RANK``)
    precision: Precision
    num_threads: int | None  # torch's intra-op threads (None: torch's default)
    tf32: bool  # TF32 matmuls on CUDA
    trainer_options: dict[str, Any]  # trainer arguments the profile decides (device, DDP backend and timeout)
    eval_batch_size: int  # sentences per batch when the evaluators encode
    packing: str  # auto, true or false
    packing_row_length: int  # tokens per packed row, at least
    cast_weights_once: bool  # one bf16 copy of the weights per training step
    eager_training_attention: bool  # ``hardware.training_attention=eager``
    bits_dropout: bool  # ``hardware.dropout_masks=bits`` on a CPU: masks from 16-bit slices while training
    merged_forward: bool  # ``hardware.merged_forward``: all text columns in one forward where rows are packed
    world_size: int  # processes taking part in the job


def resolve_machine(hardware: DictConfig, training: DictConfig) -> Machine:
    """The profile resolved once (its values checked: ``stages.settings.Hardware``): precision, device and
    everything else the build, train and evaluate steps take from it."""
    return Machine(
        accelerator=str(hardware.accelerator),
        device=device(hardware),
        precision=resolve_precision(hardware, training),
        num_threads=int(hardware.num_threads) if hardware.num_threads else None,
        tf32=bool(hardware.tf32),
        trainer_options=trainer_options(hardware, training),
        eval_batch_size=int(hardware.eval_batch_size or training.per_device_eval_batch_size),
        packing=str(hardware.packing).lower(),
        packing_row_length=int(hardware.packing_row_length),
        cast_weights_once=bool(hardware.cast_weights_once),
        eager_training_attention=hardware.get("training_attention") == "eager",
        bits_dropout=hardware.accelerator == "cpu" and hardware.get("dropout_masks") == "bits",
        merged_forward=bool(hardware.get("merged_forward")),
        world_size=world_size(),
    )


def check_device(hardware: DictConfig) -> None:
    """A cuda profile needs a CUDA device on this machine (the profile's values: ``stages.settings.Hardware``).
    Raises :class:`PipelineError` naming the key and the fix."""
    if hardware.accelerator == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PipelineError(
                "hardware.accelerator=cuda but torch sees no CUDA device on this machine (torch "
                f"{torch.__version__}): use hardware=cpu or cpu_ddp here, or install a CUDA build of torch (README)."
            )


def cpu_has_fast_bf16() -> bool:
    """Native bf16 on this CPU, usable by oneDNN: no model names. On x86 that is AVX512-BF16 or AMX as
    torch's cpuinfo reports them, since oneDNN alone also says yes on AVX-512 without BF16 (it emulates)."""
    import torch

    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    capabilities = torch.cpu.get_capabilities()
    if capabilities.get("architecture") in ("x86_64", "x86"):
        return onednn and bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return onednn


def gpu_has_bf16() -> bool:
    """bf16 on the CUDA device (Ampere and newer), as torch reports it."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(hardware: DictConfig, training: DictConfig) -> Precision:
    """What runs here: CPU auto = bf16 with native support else fp32; GPU auto = bf16 where
    supported, else fp16 only if the recipe asks for it, else fp32 (with TF32 matmuls)."""
    intended = "fp16" if training.get("fp16") else "bf16" if training.get("bf16") else "fp32"
    wanted = str(hardware.precision)
    if hardware.accelerator == "cpu":
        if wanted == "auto" or wanted == "fp16":
            effective = "bf16" if cpu_has_fast_bf16() else "fp32"
        else:
            effective = wanted
    elif wanted == "auto":
        effective = "bf16" if gpu_has_bf16() else "fp16" if intended == "fp16" else "fp32"
    else:
        effective = wanted
    if effective != intended and intended != "fp32":
        log.warning(
            "Precision: the recipe asks for %s; on %s this runs as %s (hardware.precision=%s)",
            intended,
            hardware.accelerator,
            effective,
            wanted,
        )
    else:
        log.info("Precision: %s on %s (hardware.precision=%s)", effective, hardware.accelerator, wanted)
    return Precision(intended, effective, fp16=effective == "fp16", bf16=effective == "bf16")


def configure_threads(machine: Machine) -> None:
    """Intra-op threads (``hardware.num_threads``) and, on CUDA, TF32 matmuls (``hardware.tf32``)."""
    import torch

    if machine.num_threads:
        torch.set_num_threads(machine.num_threads)
    # torch's own switch (transformers' enable_tf32 is lru-cached: on, off, on again would stay off); set
    # off again when an earlier job of this process (a sweep over hardware.tf32) left it on
    if machine.tf32 or torch.backends.fp32_precision == "tf32":
        torch.backends.fp32_precision = "tf32" if machine.tf32 else "ieee"


def device(hardware: DictConfig) -> str:
    """Where this process's models live: ``cpu``, or its own GPU (``cuda:LOCAL_RANK``) on a cuda profile.
    The trainer moves the model itself; evaluation without training needs this."""
    if hardware.accelerator != "cuda":
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def process_rank() -> int:
    """Global rank of this process (0 outside a multi-process launch)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_tags(args: Any, world: int) -> dict[str, str]:
    """World size (``world``: the machine's) and, when the job trains (``args``: its
    ``SentenceTransformerTrainingArguments``), the per-device and global train batch, as run tags."""
    if args is None:
        return {"world_size": str(world)}
    per_device, accumulation = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    return {
        "world_size": str(world),
        "batch.per_device": str(per_device),
        "batch.global": str(per_device * accumulation * world),
    }


def trainer_options(hardware: DictConfig, training: DictConfig) -> dict:
    """Trainer arguments the profile decides: device and, with several ranks, backend and timeout."""
    options = {"use_cpu": hardware.accelerator == "cpu"}
    if int(hardware.num_processes) > 1:
        options["ddp_backend"] = str(hardware.backend or ("gloo" if hardware.accelerator == "cpu" else "nccl"))
        if "ddp_timeout" not in training:
            options["ddp_timeout"] = int(hardware.timeout_s)
    return options


def autocast(precision: Precision, device: str = "cpu"):
    """The effective reduced precision as an autocast context for inference (evaluation)."""
    import contextlib

    import torch

    if precision.effective == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if precision.bf16 else torch.float16)


def loss_region(machine: Machine):
    """A context around each training step's loss (its forwards) that keeps autocast's cast weights for the
    whole step, or None (``hardware.cast_weights_once`` off, or fp32).

    The trainer autocasts each forward separately (Accelerate wraps ``model.forward``), and autocast drops
    its cache of cast weights when its outermost region ends: a loss that encodes its text columns one
    forward each (MNRL: anchor, then positive) casts every weight to bf16 once per column. An autocast
    region entered *disabled* around the loss nests those forwards without turning autocast on for the
    loss itself (its similarities stay fp32), so the weights are cast once and the cast reused by every
    column; it ends before the optimizer step changes them. Forward values are identical; the columns'
    weight gradients are then summed in bf16 before reaching the fp32 weights (one rounding more).
    """
    if machine.precision.effective == "fp32" or not machine.cast_weights_once:
        return None
    import torch

    device_type = "cuda" if machine.accelerator == "cuda" else "cpu"
    return lambda: torch.autocast(device_type, enabled=False)


@contextlib.contextmanager
def training_attention(model, machine: Machine) -> Iterator[None]:
    """While training on a CPU with ``hardware.training_attention=eager``: a model that attends through
    torch's ``scaled_dot_product_attention`` with dropout on the attention probabilities runs its eager
    attention instead, and returns to ``sdpa`` after (evaluation keeps the fused kernel).

    With dropout, torch's CPU ``scaled_dot_product_attention`` leaves its fused kernel for the math path,
    which casts bf16 inputs to fp32 and runs unfused; the eager path runs the same operations (scores,
    softmax, dropout, weighted sum) with the two products in bf16 under autocast and the softmax in fp32.
    Results change within bf16 rounding and the dropout draws (BENCHMARKS.md, issue 31).
    """
    auto_model = getattr(model[0], "auto_model", None) if len(model) else None
    config = getattr(auto_model, "config", None)
    if (
        not machine.eager_training_attention
        or machine.accelerator != "cpu"
        or getattr(config, "_attn_implementation", None) != "sdpa"
        or not getattr(config, "attention_probs_dropout_prob", 0)
        or not hasattr(auto_model, "set_attn_implementation")
    ):
        yield
        return
    auto_model.set_attn_implementation("eager")
    log.info("Attention: eager while training (sdpa with dropout runs unfused in fp32 on this CPU)")
    try:
        yield
    finally:
        auto_model.set_attn_implementation("sdpa")

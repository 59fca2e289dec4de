"""Glue between the ``hardware`` profile and the trainer: device, threads and effective precision.

A recipe states its intent (``training.fp16``/``bf16``, e.g. a card trained with fp16 on a GPU);
the profile resolves what this machine runs well. Both values are logged as params
(``precision.intended``, ``precision.effective``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    intended: str  # what the recipe asks for: fp16, bf16 or fp32
    effective: str  # what runs here
    fp16: bool
    bf16: bool


def cpu_has_fast_bf16() -> bool:
    """Native bf16 on this CPU (AVX512-BF16 or AMX), as oneDNN reports it: no model names."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(hardware: DictConfig, training: DictConfig) -> Precision:
    intended = "fp16" if training.get("fp16") else "bf16" if training.get("bf16") else "fp32"
    wanted = str(hardware.get("precision", "auto"))
    if hardware.accelerator == "cpu":
        if wanted == "auto":
            effective = "bf16" if cpu_has_fast_bf16() else "fp32"
        elif wanted == "fp16":
            effective = "bf16" if cpu_has_fast_bf16() else "fp32"
        else:
            effective = wanted
    else:
        effective = intended if wanted == "auto" else wanted
    if effective != intended and intended != "fp32":
        log.warning("Precision: the recipe asks for %s; on %s this runs as %s (hardware.precision=%s)",
                    intended, hardware.accelerator, effective, wanted)
    else:
        log.info("Precision: %s on %s (hardware.precision=%s)", effective, hardware.accelerator, wanted)
    return Precision(intended, effective, fp16=effective == "fp16", bf16=effective == "bf16")


def configure_threads(hardware: DictConfig) -> None:
    if hardware.get("num_threads"):
        import torch

        torch.set_num_threads(int(hardware.num_threads))

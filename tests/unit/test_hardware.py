"""Hardware profiles: launch command lines, precision resolution, trainer options (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline import PipelineError
from pipeline.runtime import launch
from pipeline.runtime.hardware import cpu_has_fast_bf16, resolve_machine, resolve_precision, world_tags
from pipeline.stages.settings import Hardware, check_values
from tests.conftest import compose_config


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cpu_ddp_launches_two_gloo_ranks_on_one_machine():
    hw = compose_config(["hardware=cpu_ddp"]).hardware
    assert launch.wanted(hw) and not launch.wanted(compose_config([]).hardware)
    argv = launch.command(hw, Path("/tmp/x/launch"))
    assert argv[1:3] == ["-m", "pipeline.runtime.elastic"] and argv[-3:] == ["-m", "pipeline.rank", "/tmp/x/launch"]
    assert flag(argv, "--num_processes") == "2" and flag(argv, "--num_machines") == "1"
    assert flag(argv, "--max_restarts") == "0" and int(flag(argv, "--main_process_port")) > 0
    machine = resolve_machine(hw, compose_config(["hardware=cpu_ddp"]).training)
    assert machine.trainer_options == {"use_cpu": True, "ddp_backend": "gloo", "ddp_timeout": 300}
    assert (machine.accelerator, machine.device) == ("cpu", "cpu")


def test_the_machine_encodes_in_the_profiles_eval_batch_else_the_trainers():
    """``hardware.eval_batch_size`` when the profile sets one, else ``training.per_device_eval_batch_size``."""
    for overrides, batch in ((["hardware.eval_batch_size=5"], 5), (["hardware.eval_batch_size=null"], 7)):
        cfg = compose_config([*overrides, "training.per_device_eval_batch_size=7"])
        assert resolve_machine(cfg.hardware, cfg.training).eval_batch_size == batch, overrides


def test_multi_node_needs_the_rendezvous_address():
    with pytest.raises(PipelineError, match="main_process_ip"):
        Hardware.rules(compose_config(["hardware=multi_node", "hardware.accelerator=cpu"]).hardware, "hardware")
    for key in ("timeout_s", "join_timeout_s"):  # null once meant a default written in the code: now a mistake
        with pytest.raises(PipelineError, match=f"hardware.{key}=None: a number of seconds > 0"):
            check_values(compose_config(["hardware=cpu_ddp", f"hardware.{key}=null"]))
    hw = compose_config(
        ["hardware=multi_node", "hardware.main_process_ip=10.0.0.1", "hardware.machine_rank=1"]
    ).hardware
    argv = launch.command(hw, Path("/tmp/x"))
    assert flag(argv, "--main_process_ip") == "10.0.0.1" and flag(argv, "--machine_rank") == "1"
    assert flag(argv, "--main_process_port") == "29500" and flag(argv, "--num_machines") == "2"


def test_hardware_never_changes_results_only_speed():
    plain = compose_config([])
    for option in ("cpu_ddp", "gpu", "multi_gpu", "multi_node"):
        cfg = compose_config([f"hardware={option}"])
        assert cfg.training == plain.training and cfg.loss == plain.loss, option


def test_cpu_precision_follows_the_cpu_flags():
    """auto is bf16 where the CPU has native bf16 (AVX512-BF16 / AMX on x86, BF16 on Arm), fp32 on every
    other CPU, AVX-512 without BF16 included: read from /proc/cpuinfo, not from the detection under test."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo")
    flags = set(cpuinfo.read_text().split())
    native = bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)
    kind = (
        "native bf16"
        if native
        else "AVX-512 without BF16"
        if any(f.startswith("avx512") for f in flags)
        else "no AVX-512"
    )
    training = compose_config([]).training
    auto = resolve_precision(OmegaConf.create({"accelerator": "cpu", "precision": "auto"}), training)
    assert auto.intended == "fp32"
    assert (auto.effective, auto.bf16, cpu_has_fast_bf16()) == (
        ("bf16", True, True) if native else ("fp32", False, False)
    ), f"CPU kind: {kind}"
    forced = resolve_precision(OmegaConf.create({"accelerator": "cpu", "precision": "fp32"}), training)
    assert forced.effective == "fp32" and not forced.bf16


def test_gpu_precision_without_bf16_uses_fp16_only_when_the_recipe_asks():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-bf16 fallback is not what runs here")
    hw = OmegaConf.create({"accelerator": "cuda", "precision": "auto"})
    assert resolve_precision(hw, OmegaConf.create({"fp16": True})).effective == "fp16"
    assert resolve_precision(hw, OmegaConf.create({"fp16": False})).effective == "fp32"


def test_global_batch_is_per_device_times_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = compose_config([])
    world = resolve_machine(cfg.hardware, cfg.training).world_size
    tags = world_tags(OmegaConf.create({"per_device_train_batch_size": 32, "gradient_accumulation_steps": 2}), world)
    assert tags == {"world_size": "4", "batch.per_device": "32", "batch.global": "256"}

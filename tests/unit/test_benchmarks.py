"""The GPU check (``make gpu-check``) skips in one line, exit 0, on a machine without CUDA; ``bench_cpu`` names a
round whose clock moved."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT


def test_gpu_check_skips_in_one_line_without_cuda():
    if shutil.which("nvidia-smi") or torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check runs instead of skipping")
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 0, out.stderr
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped: no CUDA device"), lines


def test_bench_cpu_names_a_round_whose_wall_clock_moved():
    from benchmarks import bench_cpu

    run = {"wall_s": 60.0, "startup_s": 6.5, "train_s": 45.0, "train_samples_per_s": 31.0, "spearman": 0.82}
    paused = {**run, "wall_s": 79.7, "startup_s": 7.4, "train_s": 198.1}  # the trainer's time.time() jumped
    runs = {"plain_fp32": [run, run, run], "pipeline_equal": [run, run, paused]}
    runs = {name: [{**r, "precision": "fp32", "world_size": 1} for r in rounds] for name, rounds in runs.items()}
    report = {
        "command": "bench_cpu.py", "rounds": 3, "max_steps": None, "load_before": "0", "load_after": "0", "runs": runs,
        "machine": {"cpu": "cpu", "cores": 2, "flags": [], "kind": "k", "onednn_bf16": False, "torch": "2"},
        "peak_flops": {"fp32": 1e11, "bf16": 2e11}, "peak_sizes": {"fp32": 2048, "bf16": 2048},
    }  # fmt: skip
    report["medians"] = bench_cpu.medians(report, 1e12)
    report["summary"] = bench_cpu.summary(report)
    assert bench_cpu.clock_moved(report) == ["pipeline_equal, round 3: start-up + training 205.5 s, wall 79.7 s"]
    lines = [line for line in bench_cpu.markdown(report).splitlines() if "clock moved" in line]
    assert len(lines) == 1 and "pipeline_equal, round 3" in lines[0]
    assert report["medians"]["pipeline_equal"]["train_s"] == 45.0  # the median holds against the one round

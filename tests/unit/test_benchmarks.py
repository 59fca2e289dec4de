"""The GPU check (``make gpu-check``) skips in one line, exit 0, on a machine without CUDA."""

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

"""The benchmarks' own behaviour: the GPU check skips in one line without CUDA; the floor benchmark
records the matrix products of a real training step (forward and backward) and replays them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "pipeline" / "data" / "example"


def test_gpu_check_skips_in_one_line_without_cuda():
    if shutil.which("nvidia-smi") or torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check runs instead of skipping")
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 0, out.stderr
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped: no CUDA device"), lines


def test_floor_records_and_replays_the_products_of_a_training_step():
    from benchmarks import bench_floor

    s = bench_floor.setup(EXAMPLE, quick=True, batches=1)
    products = bench_floor.record(s, s.batches[0])
    names = {product.name for product in products}
    assert {"addmm", "mm"} <= names, names  # the linear layers forward (addmm) and their gradients (mm)
    # weight gradients multiply a transposed activation: the layout is recorded, not just the shape
    assert any(operand.layout == "T" for product in products for operand in product.operands())
    total, each = bench_floor.replay(products)
    assert len(each) == len(products) and 0 < sum(each) <= total
    assert sum(product.flops() for product in products) > 0
    table = bench_floor.product_table(products, each)
    assert sum(group["calls"] for group in table) == len(products)

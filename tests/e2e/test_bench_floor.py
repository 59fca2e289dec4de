"""benchmarks/bench_floor.py: the matrix products of a real training step (tiny model, packed, forward
and backward) are recorded with their layouts and replayed back to back."""

from __future__ import annotations

from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "pipeline" / "data" / "example"


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

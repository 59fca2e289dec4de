"""The floor of a training step: the matrix products of one default step, timed back to back.

One training step of the default recipe (all-MiniLM-L6-v2, MultipleNegativesRankingLoss on STSb train
pairs scored >= 4.0, batch 32, the ``hardware=cpu`` profile: bf16 autocast where this CPU has native
bf16, packed rows of ``packing_row_length`` tokens, the trainer's fused AdamW and gradient clipping)
runs once per batch under a ``TorchDispatchMode`` that records every matrix product it issues, forward
and backward (``mm``, ``addmm``, ``bmm``, ``baddbmm`` and the fused attention kernels
``_scaled_dot_product_*``): operator, shapes, strides (a transposed operand is one with column-major
strides), dtypes and the other arguments. Those products are then run again, back to back, on fresh
tensors of the same layout: the time no implementation of this step on this machine can beat without
changing its products. Reported, per batch and as medians over ``--rounds`` (the real step and the
floor interleaved, their order alternating, so that load from other processes hits both alike):

- the step (forward, backward, clipping, optimizer) against the floor, and the ratio;
- the products grouped by operator and shapes: calls, milliseconds, GFLOP/s;
- the rest of the step by operator (``torch.profiler`` self CPU time over ``--profile-steps`` steps):
  which elementwise operators take what share.

Writes ``benchmarks/results/bench_floor-<date>-<cpu kind>.json`` and ``.md``.

    .venv/bin/python benchmarks/bench_floor.py --data ../shared/data/stsb --rounds 5
    .venv/bin/python benchmarks/bench_floor.py --quick        # a check of the benchmark (model=tiny, 1 batch)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.bench_cpu import copy_bandwidth, loadavg, machine, matmul_peak, write_results  # noqa: E402

PRODUCTS = ("mm", "addmm", "bmm", "baddbmm")


def is_product(func) -> bool:
    name = func.overloadpacket.__name__
    return name in PRODUCTS or name.startswith("_scaled_dot_product")


@dataclass(frozen=True)
class Operand:
    """A tensor argument as recorded: enough to make a fresh one of the same layout."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: object
    value: object = None  # the tensor itself where it is not floating point (attention masks)

    @property
    def layout(self) -> str:
        if len(self.shape) < 2:
            return ""
        inner, outer = self.stride[-1], self.stride[-2]
        return "T" if inner != 1 and outer == 1 else "N" if inner == 1 else "S"

    def make(self):
        import torch

        if self.value is not None:
            return self.value.clone()
        tensor = torch.empty_strided(self.shape, self.stride, dtype=self.dtype)
        return tensor.normal_(0, 0.1)


@dataclass
class Product:
    func: object
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.func.overloadpacket.__name__

    def operands(self) -> list[Operand]:
        return [a for a in (*self.args, *self.kwargs.values()) if isinstance(a, Operand)]

    def signature(self) -> str:
        """Operator, operand shapes with their layout (N / T), dtype: the grouping key of the report."""
        shapes = " ".join("x".join(map(str, o.shape)) + (o.layout and f"{o.layout}") for o in self.operands()[:3])
        dtype = str(self.operands()[0].dtype).replace("torch.", "") if self.operands() else ""
        return f"{self.name} {shapes} {dtype}"

    def flops(self) -> float:
        """Multiply-adds x 2 of the product (attention: the two products of each head, x2 backward)."""
        ops = self.operands()
        if self.name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = ops[-2].shape, ops[-1].shape
            batch = a[0] if len(a) == 3 else 1
            return 2.0 * batch * a[-2] * a[-1] * b[-1]
        q, k = ops[0].shape, ops[1].shape
        if "backward" in self.name:  # grad_out first: q, k, v follow
            q, k = ops[1].shape, ops[2].shape
            return 2 * 2.0 * 2 * q[0] * q[1] * q[2] * k[2] * q[3]
        return 2 * 2.0 * q[0] * q[1] * q[2] * k[2] * q[3]


def recorder():
    """A dispatch mode that records the matrix products of what runs inside it."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    def spec(value):
        if not isinstance(value, torch.Tensor):
            return value
        keep = None if value.is_floating_point() else value.detach().clone()
        return Operand(tuple(value.shape), tuple(value.stride()), value.dtype, keep)

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.products: list[Product] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if is_product(func):
                self.products.append(Product(func, tree_map(spec, args), tree_map(spec, kwargs)))
            return func(*args, **kwargs)

    return Recorder()


@dataclass
class Setup:
    model: object
    loss: object
    optimizer: object
    batches: list
    precision: str
    config: dict = field(default_factory=dict)
    machine: Any = None  # the default hardware profile, resolved: its training attention
    apart_loss: Any = None  # the same loss embedding each column in its own forward (the library's own)


def setup(data: Path, quick: bool, batches: int, seed: int = 42) -> Setup:
    """The default job's model, packer, loss and optimizer, and ``batches`` batches of 32 pairs."""
    import pandas as pd
    import torch
    from omegaconf import OmegaConf
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from pipeline.runtime import allocator, packing
    from pipeline.runtime.hardware import cpu_has_fast_bf16, resolve_machine
    from pipeline.runtime.merged_forward import merge_columns
    from pipeline.stages.build import load_model, why_not_merged
    from pipeline.stages.settings import declared_defaults

    allocator.keep_freed_blocks()  # as every job does (job.preflight); PIPELINE_MALLOC_KEEP=0: as glibc comes
    model_cfg = OmegaConf.load(REPO / "conf" / "model" / ("tiny.yaml" if quick else "minilm.yaml"))
    hardware = OmegaConf.merge(declared_defaults()["hardware"], OmegaConf.load(REPO / "conf" / "hardware" / "cpu.yaml"))
    machine = resolve_machine(hardware, OmegaConf.load(REPO / "conf" / "training" / "default.yaml"))
    model = load_model(model_cfg, seed=seed)
    model.train()
    packer = packing.enable(model, machine)
    loss, apart = MultipleNegativesRankingLoss(model), MultipleNegativesRankingLoss(model)
    merge_columns(loss, why_not_merged(machine, packer))  # as the job builds it (hardware.merged_forward)
    # The trainer's optimizer at the recipe's settings (transformers' default optim: adamw_torch_fused).
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, fused=True)
    frame = pd.read_csv(data / "train.csv")
    if "score" in frame:  # STSb: the pairs scored >= 4.0, as the recipe trains on
        frame = frame[frame.score >= 4.0].rename(columns={"sentence1": "anchor", "sentence2": "positive"})
    pairs = list(zip(frame.anchor, frame.positive))
    order = random.Random(seed).sample(range(len(pairs)), 32 * batches)
    chunks = [[pairs[i] for i in order[k * 32 : (k + 1) * 32]] for k in range(batches)]
    features = [[model.preprocess([p[0] for p in c]), model.preprocess([p[1] for p in c])] for c in chunks]
    precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    config = {"model": str(model_cfg.name_or_path), "packing_row_length": int(hardware.packing_row_length)}
    return Setup(model, loss, optimizer, features, precision, config, machine, apart)


def step(s: Setup, batch) -> float:
    """One training step as the trainer runs it (autocast, backward, clipping, fused AdamW) with the default
    profile's training attention (``hardware.training_attention``: eager on this CPU) and dropout masks
    (``hardware.dropout_masks``: bits); seconds."""
    import contextlib

    import torch

    from pipeline.runtime import clipping, hardware
    from pipeline.runtime.dropout import masks

    started = time.perf_counter()
    mode = hardware.training_attention(s.model, s.machine) if s.machine is not None else contextlib.nullcontext()
    with mode, masks(s.model, s.machine is not None and s.machine.bits_dropout):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            loss = s.loss([dict(f) for f in batch], None)
        loss.backward()
        clipping.clip_grad_norm(list(s.model.parameters()), 1.0)  # the trainer's on a CPU
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def record(s: Setup, batch) -> list[Product]:
    with recorder() as mode:
        step(s, batch)
    return mode.products


def replay(products: list[Product]) -> tuple[float, list[float]]:
    """The products back to back on fresh tensors made beforehand: total seconds and each one's."""
    from torch.utils._pytree import tree_map

    def make(value):
        return value.make() if isinstance(value, Operand) else value

    calls = [(p.func, tree_map(make, p.args), tree_map(make, p.kwargs)) for p in products]
    each = []
    started = time.perf_counter()
    for func, args, kwargs in calls:
        t = time.perf_counter()
        func(*args, **kwargs)
        each.append(time.perf_counter() - t)
    return time.perf_counter() - started, each


def rest_profile(s: Setup, steps: int) -> list[dict]:
    """Self CPU time by operator over ``steps`` steps (torch.profiler), largest first, with shares."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for index in range(steps):
            step(s, s.batches[index % len(s.batches)])
    rows = [
        {"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3 / steps}
        for e in prof.key_averages()
        if e.self_cpu_time_total > 0
    ]
    total = sum(r["self_ms"] for r in rows)
    for r in rows:
        r["share"] = r["self_ms"] / total
        r["product"] = r["op"].removeprefix("aten::") in PRODUCTS or "scaled_dot_product" in r["op"]
    return sorted(rows, key=lambda r: -r["self_ms"])


def product_table(products: list[Product], times: list[float]) -> list[dict]:
    groups: dict[str, dict] = {}
    for product, seconds in zip(products, times):
        g = groups.setdefault(product.signature(), {"product": product.signature(), "calls": 0, "s": 0.0, "flops": 0.0})
        g["calls"] += 1
        g["s"] += seconds
        g["flops"] += product.flops()
    return sorted(groups.values(), key=lambda g: -g["s"])


def markdown(report: dict) -> str:
    m, r = report["machine"], report["result"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])} ({m['kind']}), oneDNN bf16: "
        f"{m['onednn_bf16']}, torch {m['torch']}, {m['torch_threads']} threads  ",
        f"Load (1/5/15 min) before: {report['load_before']}, after: {report['load_after']}; {report['note']}",
        "",
        f"Model {report['config']['model']}, batch 32 pairs, {report['precision']}, packed rows of "
        f"{report['config']['packing_row_length']}; {len(report['batches'])} batches x {report['rounds']} rounds, "
        "step and floor interleaved.",
        "",
        "| batch | products | step ms | floor ms | step / floor |",
        "|---|---|---|---|---|",
    ]
    for index, b in enumerate(report["batches"]):
        lines.append(
            f"| {index} | {b['products']} | {b['step_ms']:.1f} | {b['floor_ms']:.1f} | {b['step_ms'] / b['floor_ms']:.2f} |"
        )
    lines += [
        f"| **median** | | **{r['step_ms']:.1f}** | **{r['floor_ms']:.1f}** | **{r['ratio']:.2f}x** |",
        "",
        f"- matmul peak ({report['precision']}, 2048², all threads): {report['peak_gflops']:.1f} GFLOP/s; the floor's "
        f"products run at {r['floor_gflops']:.1f} GFLOP/s ({r['floor_gflops'] / report['peak_gflops']:.0%} of it)",
        f"- copy bandwidth (a {report['copy_megabytes']} MB tensor copied, read plus write, all threads): "
        f"{report['copy_gbps']:.1f} GB/s; the "
        "step's memory-bound operators (the optimizer, masks, casts) move with it from hour to hour",
        "",
        "Products of batch 0 (the floor), by operator and operand shapes (T: a transposed operand):",
        "",
        "| product | calls | ms | GFLOP/s |",
        "|---|---|---|---|",
    ]
    for g in report["products"][:25]:
        lines.append(f"| `{g['product']}` | {g['calls']} | {g['s'] * 1e3:.2f} | {g['flops'] / g['s'] / 1e9:.1f} |")
    lines += [
        "",
        f"The whole step by operator (torch.profiler, self CPU time, mean of {report['profile_steps']} steps; "
        "products in bold):",
        "",
        "| operator | calls / step | ms / step | share |",
        "|---|---|---|---|",
    ]
    for row in report["profile"][:25]:
        name = f"**{row['op']}**" if row["product"] else row["op"]
        lines.append(
            f"| {name} | {row['calls'] / report['profile_steps']:.0f} | {row['self_ms']:.2f} | {row['share']:.1%} |"
        )
    share = sum(row["share"] for row in report["profile"] if row["product"])
    lines.append(f"\nProducts: {share:.1%} of the profiled step; everything else: {1 - share:.1%}.")
    return "\n".join(lines) + "\n"


def uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default="../shared/data/stsb",
        help="STS Benchmark folder (train.csv), or any of anchor, positive pairs",
    )
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 pairs (seeded draw)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the batches: step and floor interleaved")
    parser.add_argument("--profile-steps", type=int, default=6, help="steps under torch.profiler")
    parser.add_argument("--quick", action="store_true", help="model=tiny, 1 batch, 1 round: a check of the benchmark")
    parser.add_argument("--note", default="", help="a line for the report (e.g. 'measured under load, provisional')")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the .json and .md")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds, args.profile_steps = 1, 1, 1
    data = Path(args.data) if Path(args.data).is_absolute() else (REPO / args.data).resolve()
    if not (data / "train.csv").is_file():
        raise SystemExit(f"--data {args.data}: no train.csv there; point it at the STS Benchmark folder.")
    report = run(args, data)
    stem = f"bench_floor-{time.strftime('%Y%m%d-%H%M')}-{report['machine']['kind']}" + ("-quick" if args.quick else "")
    write_results(report, Path(args.out), stem, markdown)


def run(args, data: Path) -> dict:
    import torch

    report = {
        "command": " ".join(["benchmarks/bench_floor.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "uptime_before": uptime(),
        "load_before": loadavg(),
        "note": args.note,
        "rounds": args.rounds,
        "profile_steps": args.profile_steps,
    }
    s = setup(data, args.quick, args.batches)
    report["precision"], report["config"] = s.precision, s.config
    report["peak_gflops"] = (
        matmul_peak(s.precision, size=512 if args.quick else 2048, seconds=1 if args.quick else 3) / 1e9
    )
    report["copy_megabytes"] = 64 if args.quick else 256
    report["copy_gbps"] = copy_bandwidth(report["copy_megabytes"], seconds=1 if args.quick else 2) / 1e9
    step(s, s.batches[0])  # warm-up: oneDNN primitives, the optimizer's state
    recorded = [record(s, batch) for batch in s.batches]
    steps: list[list[float]] = [[] for _ in s.batches]
    floors: list[list[float]] = [[] for _ in s.batches]
    each: list[list[float]] = []
    for round_index in range(args.rounds):
        for index, batch in enumerate(s.batches):
            for part in ("step", "floor") if (round_index + index) % 2 == 0 else ("floor", "step"):
                if part == "step":
                    steps[index].append(step(s, batch))
                else:
                    total, times = replay(recorded[index])
                    floors[index].append(total)
                    if index == 0:
                        each.append(times)
    report["batches"] = [
        {
            "products": len(recorded[i]),
            "step_ms": statistics.median(steps[i]) * 1e3,
            "floor_ms": statistics.median(floors[i]) * 1e3,
            "step_s": steps[i],
            "floor_s": floors[i],
        }
        for i in range(len(s.batches))
    ]
    step_ms = statistics.median(b["step_ms"] for b in report["batches"])
    floor_ms = statistics.median(b["floor_ms"] for b in report["batches"])
    flops = sum(p.flops() for p in recorded[0])
    report["result"] = {
        "step_ms": step_ms,
        "floor_ms": floor_ms,
        "ratio": step_ms / floor_ms,
        "floor_gflops": flops / (report["batches"][0]["floor_ms"] / 1e3) / 1e9,
    }
    per_call = [statistics.median(times) for times in zip(*each)]
    report["products"] = product_table(recorded[0], per_call)
    report["profile"] = rest_profile(s, args.profile_steps)
    report["load_after"], report["uptime_after"] = loadavg(), uptime()
    report["torch_threads"] = torch.get_num_threads()
    return report


if __name__ == "__main__":
    main()

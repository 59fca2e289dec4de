"""Packed against padded batches on the benchmark recipe: throughput, MFU, and quality after training.

The recipe: all-MiniLM-L6-v2, MultipleNegativesRankingLoss on STSb train pairs scored >= 4.0
(1,406 pairs), batch 32, 1 epoch, lr 2e-5, warmup 0.1, no-duplicates batches, seed 42; quality is
STSb-test Spearman (cosine). Three parts, each printed as it finishes (markdown), with /proc/loadavg:

1. ``peak``: this machine's measured matmul peak (fp32, and bf16 where the CPU has it).
2. ``throughput``: forward + backward of the loss over the first ``--batches`` batches, padded and
   packed interleaved batch by batch (so load from other processes hits both alike), fp32 and bf16
   autocast; pairs/s, real tokens/s, tokens processed per pair, useful-token MFU (model FLOPs of the
   real tokens only, against the measured peak).
3. ``train``: the whole job through the pipeline (``python -m pipeline``, a fresh process each, on a
   temporary SQLite store), ``hardware.packing=false`` and ``true`` at each of ``--row-lengths``, at
   each ``--precisions``, in a shuffled order in each of ``--rounds``; STSb-test Spearman (first round; the seed fixes
   it) and median train and job seconds of each.

    .venv/bin/python benchmarks/bench_packing.py [--data ../shared/data/stsb] [--parts peak,throughput,train]
    .venv/bin/python benchmarks/bench_packing.py --parts train --precisions bf16 --row-lengths 128,96,64,48,32 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measured_peak(dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a square matmul over a few repeats (torch's own threads)."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def training_flops(config, lengths: list[int]) -> float:
    """Forward + backward (3x forward) matmul FLOPs of encoding sentences of these lengths alone."""
    hidden, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * inner)
    forward = sum(layers * (length * per_token + 4 * length * length * hidden) for length in lengths)
    return 3.0 * forward


def stsb_pairs(data: Path) -> list[tuple[str, str]]:
    import pandas as pd

    frame = pd.read_csv(data / "train.csv")
    frame = frame[frame.score >= 4.0]
    return list(zip(frame.sentence1, frame.sentence2))


def throughput(data: Path, batches: int, precisions: list[str], peaks: dict[str, float], row_length: int) -> None:
    import torch
    from omegaconf import OmegaConf
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from pipeline.runtime import packing
    from pipeline.stages.build import load_model

    pairs = stsb_pairs(data)
    torch.manual_seed(42)
    order = torch.randperm(len(pairs)).tolist()
    chunks = [[pairs[i] for i in order[k * 32 : (k + 1) * 32]] for k in range(batches)]
    model = load_model(OmegaConf.create({"name_or_path": "sentence-transformers/all-MiniLM-L6-v2"}), seed=42)
    model.train()
    loss = MultipleNegativesRankingLoss(model)
    config = model[0].auto_model.config
    features = [[model.preprocess([p[0] for p in chunk]), model.preprocess([p[1] for p in chunk])] for chunk in chunks]
    lengths = [int(n) for cols in features for f in cols for n in f["attention_mask"].sum(1)]
    padded_tokens = sum(f["input_ids"].numel() for cols in features for f in cols)
    flops = training_flops(config, lengths)
    on = OmegaConf.create({"packing": "true", "packing_row_length": row_length})

    def step(batch) -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss([dict(f) for f in batch], None).backward()
        return time.perf_counter() - start

    print(
        f"\n### Throughput: forward + backward, {batches} batches of 32 pairs, interleaved (loadavg before: {loadavg()})\n"
    )
    print(
        "| precision | batches | s padded | s packed | speed-up | pairs/s padded | pairs/s packed | tokens/pair padded | tokens/pair packed | real tokens/pair | useful MFU padded | useful MFU packed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for precision in precisions:
        bf16 = precision == "bf16"
        times = {"padded": [], "packed": []}
        packer = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            packing.disable(model)
            step(features[0])  # warm-up, both ways
            packer = packing.enable(model, on)
            step(features[0])
            packer.stats = packing.PackingStats()
            for index, batch in enumerate(features):
                for mode in ("padded", "packed") if index % 2 == 0 else ("packed", "padded"):
                    if mode == "padded":
                        packing.disable(model)
                    else:
                        packer.attach()
                    times[mode].append(step(batch))
        packing.disable(model)
        padded_s, packed_s = sum(times["padded"]), sum(times["packed"])
        peak = peaks.get(precision) or peaks["fp32"]
        n_pairs = 32 * batches
        print(
            f"| {precision} | {batches} | {padded_s:.2f} | {packed_s:.2f} | {padded_s / packed_s:.2f}x "
            f"| {n_pairs / padded_s:.1f} | {n_pairs / packed_s:.1f} | {padded_tokens / n_pairs:.1f} "
            f"| {packer.stats.processed_tokens / n_pairs:.1f} | {sum(lengths) / n_pairs:.1f} "
            f"| {100 * flops / padded_s / peak:.1f}% | {100 * flops / packed_s / peak:.1f}% |",
            flush=True,
        )
        print(
            f"<!-- {precision}: median step padded {statistics.median(times['padded']):.3f}s packed {statistics.median(times['packed']):.3f}s; loadavg after {loadavg()} -->",
            flush=True,
        )


def train_once(overrides: list[str], folder: str, name: str) -> tuple[float, float, float]:
    """One job of the recipe as a fresh ``python -m pipeline`` process: (train s, job s, Spearman)."""
    import mlflow

    store = f"sqlite:///{folder}/mlflow.db"
    command = [sys.executable, "-m", "pipeline", *overrides, f"tracking.uri={store}", f"hydra.run.dir={folder}/{name}"]
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    job_s = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    run_id = re.search(r"MLflow run (\w+) FINISHED", out.stdout).group(1)
    run = mlflow.MlflowClient(store).get_run(run_id)
    return run.data.metrics["train_runtime"], job_s, run.data.metrics["sts-test_spearman_cosine"]


def train(data: Path, precisions: list[str], row_lengths: list[int], rounds: int, seed: int = 0) -> None:
    layouts = [("padded", None)] + [(f"packed, rows of {n}", n) for n in row_lengths]
    print(
        f"\n### Training the recipe through the pipeline (1 epoch, 44 steps): padded and packed at each row length; "
        f"{rounds} round(s), each layout a fresh process, in a shuffled order every round\n"
    )
    print("| precision | batches | train s (median) | job s (median) | STSb-test Spearman | loadavg at end |")
    print("|---|---|---|---|---|---|")
    shuffle = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as folder:
        for precision in precisions:
            seen: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in layouts}
            for round_ in range(rounds):
                order = list(layouts)
                shuffle.shuffle(order)
                for label, row_length in order:
                    overrides = [
                        "model=minilm",
                        "data=stsb_pairs",
                        f"data.local_dir={data}",
                        "evaluators.sts.splits=[test]",
                        f"hardware.precision={precision}",
                        f"hardware.packing={'false' if row_length is None else 'true'}",
                        *([f"hardware.packing_row_length={row_length}"] if row_length else []),
                        "tracking.log_model=false",
                        "tracking.experiment_name=bench_packing",
                    ]
                    seen[label].append(train_once(overrides, folder, f"{precision}-{row_length}-{round_}"))
                    train_s, job_s, spearman = seen[label][-1]
                    print(
                        f"<!-- round {round_ + 1} {precision} {label}: train {train_s:.1f} s, job {job_s:.1f} s, "
                        f"Spearman {spearman:.4f}, loadavg {loadavg()} -->",
                        flush=True,
                    )
            for label, _ in layouts:
                values = seen[label]
                print(
                    f"| {precision} | {label} | {statistics.median(v[0] for v in values):.1f} | "
                    f"{statistics.median(v[1] for v in values):.1f} | {values[0][2]:.4f} | {loadavg()} |",
                    flush=True,
                )
            padded = seen["padded"][0][2]
            for label, _ in layouts[1:]:
                print(
                    f"<!-- {precision}: Spearman {label} - padded = {seen[label][0][2] - padded:+.4f} -->", flush=True
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data" / "stsb",
        help="STS Benchmark folder (train.csv, test.csv)",
    )
    parser.add_argument("--parts", default="peak,throughput,train", help="comma-separated: peak, throughput, train")
    parser.add_argument("--batches", type=int, default=12, help="batches timed in the throughput part")
    parser.add_argument(
        "--row-length", type=int, default=32, help="hardware.packing_row_length for the throughput part"
    )
    parser.add_argument(
        "--row-lengths", default="32", help="comma-separated hardware.packing_row_length values for the train part"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the train part (layouts interleaved; medians)")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (bf16 only where the CPU has it)")
    args = parser.parse_args()

    import torch

    from pipeline.runtime.hardware import cpu_has_fast_bf16

    parts = set(args.parts.split(","))
    precisions = [p for p in args.precisions.split(",") if p == "fp32" or cpu_has_fast_bf16()]
    print(
        f"## Packing benchmark\n\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; loadavg at start: {loadavg()}"
    )
    peaks: dict[str, float] = {}
    if parts & {"peak", "throughput"}:
        peaks["fp32"] = measured_peak(torch.float32)
        if "bf16" in precisions:
            peaks["bf16"] = measured_peak(torch.bfloat16)
        print(
            "\nMeasured matmul peak (2048x2048, best of 5): "
            + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()),
            flush=True,
        )
    if "throughput" in parts:
        throughput(args.data, args.batches, precisions, peaks, args.row_length)
    if "train" in parts:
        train(args.data, precisions, [int(n) for n in args.row_lengths.split(",")], args.rounds)


if __name__ == "__main__":
    main()

"""The GPU check: everything that needs a CUDA GPU, in one command, in under 8 minutes on one GPU.

    make gpu-check                      # = .venv/bin/python benchmarks/gpu_check.py
    .venv/bin/python benchmarks/gpu_check.py --data ../shared/data/stsb [--max-steps N]

Where torch sees no CUDA device it prints one line and exits 0 (nothing to check). Where
``nvidia-smi`` sees a GPU but the installed torch is a CPU build, it says so and exits 1: set up a
fresh ``.venv`` on the GPU machine (``make setup`` installs PyPI's CUDA build of torch there).

On a GPU, in this order, each part with its own time limit (all together at most ``--budget`` s):

1. ``peak``: the GPU's measured bf16 matmul rate (8192² products, best of several): the MFU baseline;
2. ``tests``: ``pytest -m gpu`` (tests/e2e/test_gpu.py: bf16 and fp16 training, evaluation, packing);
3. ``plain_bf16``: benchmarks/plain_st.py on ``cuda`` with ``bf16=True`` (the recipe of bench_cpu.py:
   all-MiniLM-L6-v2, MNRL on STSb pairs, batch 32, 1 epoch, STSb-test Spearman), end to end;
4. ``pipeline_gpu``: ``python -m pipeline hardware=gpu`` on the same recipe, end to end;
5. ``pipeline_multi_gpu``: ``hardware=multi_gpu hardware.num_processes=1``, the same recipe.

For 3-5: wall seconds, start-up, training seconds, samples/s, MFU (dense-layer FLOPs of the real tokens
against the measured peak), Spearman. Writes ``benchmarks/results/gpu_check-<date>-<gpu>.json`` and
``.md``; exits 1 when a part failed (the results file says which), else 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cuda_or_exit() -> None:
    """Return where torch sees a CUDA device; else one line, and exit 0 (no GPU) or 1 (a CPU torch on a GPU).

    Without an NVIDIA driver (no ``nvidia-smi``, no ``/dev/nvidia0``) it skips before importing torch.
    """
    if not shutil.which("nvidia-smi") and not Path("/dev/nvidia0").exists():
        print("gpu-check: skipped: no CUDA device (no NVIDIA driver: no nvidia-smi, no /dev/nvidia0)")
        raise SystemExit(0)
    import torch

    if torch.cuda.is_available():
        return
    smi = shutil.which("nvidia-smi")
    listed = smi and subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip()
    if listed:
        print(
            f"gpu-check: failed: nvidia-smi lists a GPU but torch {torch.__version__} sees none: "
            "set up a fresh .venv here (rm -rf .venv && make setup installs PyPI's CUDA build of torch)"
        )
        raise SystemExit(1)
    print(f"gpu-check: skipped: no CUDA device (torch {torch.__version__})")
    raise SystemExit(0)


def bf16_peak(size: int = 8192, repeats: int = 20) -> float:
    """Best FLOP/s of a square bf16 matmul on the GPU over ``repeats`` batches of 5 products."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - started))
    return best


def gpu_tests(timeout: float) -> dict:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:xdist", "-q", "tests/e2e/test_gpu.py"]
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    summary = (out.stdout.strip().splitlines() or [""])[-1]
    return {"ok": out.returncode == 0, "seconds": time.perf_counter() - started, "summary": summary}


CONTENDERS = {
    "plain_bf16": ("--device", "cuda"),
    "pipeline_gpu": ("hardware=gpu",),
    "pipeline_multi_gpu": ("hardware=multi_gpu", "hardware.num_processes=1"),
}


def run_parts(args, report: dict, deadline: float) -> None:
    from benchmarks.bench_cpu import create_store, run_contender, train_flops

    def left(limit: float) -> float:
        remaining = deadline - time.perf_counter()
        if remaining < 10:
            raise TimeoutError("the check's time budget is spent")
        return min(limit, remaining)

    parts = report["parts"]
    try:
        parts["tests"] = gpu_tests(left(240))
    except (subprocess.TimeoutExpired, TimeoutError) as error:
        parts["tests"] = {"ok": False, "summary": f"timed out: {error}"}
    flops = train_flops(args.data, args.max_steps)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        create_store(Path(folder) / "store")
        for name, extra in CONTENDERS.items():
            print(f"gpu-check: {name}", flush=True)
            try:
                result = run_contender(name, args.data, Path(folder), args.max_steps, extra, timeout=left(150))
            except (subprocess.TimeoutExpired, TimeoutError, SystemExit) as error:
                parts[name] = {"ok": False, "error": str(error)[-2000:]}
                continue
            result["mfu"] = flops / result["train_s"] / report["peak_flops_bf16"]
            parts[name] = {"ok": True, **result}


def markdown(report: dict) -> str:
    parts = report["parts"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"GPU: {report['gpu']}, torch {report['torch']} (CUDA {report['cuda']}); measured bf16 matmul peak "
        f"{report['peak_flops_bf16'] / 1e12:.1f} TFLOP/s (8192²); check took {report['seconds']:.0f} s",
        "",
        f"- GPU tests (`pytest -m gpu`): {'passed' if parts['tests'].get('ok') else 'FAILED'}: "
        f"{parts['tests'].get('summary', '')}",
        "",
        "| contender | precision | wall s | start-up s | train s | train samples/s | MFU | STSb-test Spearman |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in CONTENDERS:
        p = parts.get(name, {"ok": False, "error": "not run"})
        if not p["ok"]:
            lines.append(
                f"| {name} | FAILED: {p['error'][-200:].replace('|', '/').replace(chr(10), ' ')} | | | | | | |"
            )
            continue
        startup = f"{p['startup_s']:.1f}" if p.get("startup_s") is not None else "n/a"
        lines.append(
            f"| {name} | {p['precision']} | {p['wall_s']:.1f} | {startup} | {p['train_s']:.1f} | "
            f"{p['train_samples_per_s']:.1f} | {p['mfu']:.1%} | {p['spearman']:.4f} |"
        )
    if parts.get("plain_bf16", {}).get("ok") and parts.get("pipeline_gpu", {}).get("ok"):
        plain, ours = parts["plain_bf16"], parts["pipeline_gpu"]
        lines += [
            "",
            f"- plain_bf16 / pipeline_gpu, wall: **{plain['wall_s'] / ours['wall_s']:.2f}x**; training alone: "
            f"{plain['train_s'] / ours['train_s']:.2f}x; Spearman difference {ours['spearman'] - plain['spearman']:+.4f}",
        ]
    return "\n".join(lines) + "\n"


def default_data() -> str:
    """The shared data beside the checkout (../shared/data/stsb), or inside it (shared/data/stsb)."""
    for root in (REPO.parent, REPO):
        if (root / "shared" / "data" / "stsb" / "train.csv").is_file():
            return str(root / "shared" / "data" / "stsb")
    return str(REPO.parent / "shared" / "data" / "stsb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data(), help="STS Benchmark folder")
    parser.add_argument("--max-steps", type=int, default=None, help="shorten training (a quicker check)")
    parser.add_argument("--budget", type=float, default=450, help="seconds for every part together")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the .json and .md")
    args = parser.parse_args()
    cuda_or_exit()
    import torch

    from benchmarks.bench_cpu import write_results

    started = time.perf_counter()
    args.data = str(Path(args.data).resolve())
    if not Path(args.data, "train.csv").is_file():
        raise SystemExit(f"gpu-check: --data {args.data}: no train.csv there; point it at the STS Benchmark folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = {
        "command": " ".join(["benchmarks/gpu_check.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "gpu": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "peak_flops_bf16": bf16_peak(),
        "parts": {},
    }
    torch.cuda.empty_cache()
    run_parts(args, report, started + args.budget)
    report["seconds"] = time.perf_counter() - started
    gpu = re.sub(r"[^a-z0-9]+", "-", report["gpu"].lower()).strip("-")
    write_results(report, Path(args.out), f"gpu_check-{time.strftime('%Y%m%d-%H%M')}-{gpu}", markdown)
    raise SystemExit(0 if all(part.get("ok") for part in report["parts"].values()) else 1)


if __name__ == "__main__":
    main()

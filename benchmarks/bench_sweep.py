"""Sweeps at the speed of their training, measured on this machine (issue 24).

Recipe (every job): the STSb pairs recipe of ``bench_cpu.py``: all-MiniLM-L6-v2, MultipleNegativesRankingLoss
on the STSb train pairs scored >= 4.0 (1,406), batch 32, 1 epoch, warmup 0.1, no_duplicates, seed 42; the
default evaluator (``sts`` on dev and test) and the baseline on (the default). Parts, each command a fresh
process against a fresh, already created MLflow store:

- ``alone``: each of the 4 learning rates as a single job on its own (each computes its baseline);
- ``sequential``: the same 4 jobs as one ``-m`` sweep (Hydra's basic launcher: one process); the target
  is sweep wall <= 1.10 x (job 1 alone + jobs 2-4 alone's training and final evaluation, i.e. their
  ``job_seconds - job_seconds_to_first_step``), jobs 2-4 at their first step <= 3 s after they start, and
  every job's final metrics equal to its job alone's;
- ``parallel``: the same 4 jobs with ``sweep=parallel`` (joblib, 2 at a time, cores split between them):
  jobs per hour against the sequential sweep's;
- ``scale``: a train file of N synthetic pairs (``make_pairs.py``), ``training.max_steps=3``, no baseline:
  time from the process's start to the first training step and the process's peak RSS, at each N.

Writes the raw results to ``benchmarks/results/bench_sweep-<date>-<cpu kind>.json`` and the tables to
``.md`` beside it. ``--quick`` checks the benchmark itself in minutes (``model=tiny``, a few steps, small N).

    .venv/bin/python benchmarks/bench_sweep.py --data ../shared/data/stsb
    .venv/bin/python benchmarks/bench_sweep.py --quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu import REPO, create_store, loadavg, machine, write_results
from make_pairs import write_pairs

LEARNING_RATES = ("2e-5", "3e-5", "4e-5", "5e-5")
RECIPE = ("model=minilm", "loss=mnrl", "data=stsb_pairs", "training.per_device_train_batch_size=32",
          "training.num_train_epochs=1", "training.warmup_steps=0.1", "training.batch_sampler=no_duplicates",
          "training.seed=42", "tracking.log_model=false")  # fmt: skip
QUICK = ("model=tiny", "training.max_steps=5")  # added last: they win
SCALE = (1_000_000, 10_000_000, 10_000)
QUICK_SCALE = (100_000, 10_000)


def pipeline(args: list[str], store: Path, label: str) -> tuple[float, int, str]:
    """``python -m pipeline ARGS`` against ``store``: (wall s, peak RSS bytes of the process, output)."""
    command = [sys.executable, "-m", "pipeline", *args, f"tracking.uri=sqlite:///{store}/mlflow.db",
               f"tracking.artifact_root={store}/artifacts", f"hydra.run.dir={store}/{label}",
               f"hydra.sweep.dir={store}/{label}-sweep"]  # fmt: skip
    log = store / f"{label}.log"
    started = time.perf_counter()
    with open(log, "w") as stream:
        process = subprocess.Popen(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{label} failed ({process.returncode}):\n{output[-3000:]}")
    return wall, usage.ru_maxrss * 1024, output


def jobs(store: Path) -> list[dict]:
    """Every job run of the store (sweep parents left out), oldest first, with what the tables need."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(experiments) if r.data.tags.get("pipeline.role") != "sweep"]
    out = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        m, tags = run.data.metrics, run.data.tags
        first = m.get("job_seconds_to_first_step")
        out.append({
            "run_id": run.info.run_id, "status": run.info.status,
            "learning_rate": run.data.params["training.learning_rate"],
            "job_s": m["job_seconds"], "first_step_s": first, "startup_s": m.get("startup_seconds"), "train_s": m.get("train_runtime"),
            "after_training_s": m["job_seconds"] - first - m["train_runtime"] if first is not None else None,
            "baseline_cache": tags.get("baseline.cache"), "load_cache_model": tags.get("load.cache.model"),
            "load_cache_data": tags.get("load.cache.data"),
            "final": {k: v for k, v in m.items() if k.startswith("sts-")},
            "baseline": {k: v for k, v in m.items() if k.startswith("baseline/")},
        })  # fmt: skip
    return out


def fresh_store(work: Path, name: str) -> Path:
    store = work / name
    create_store(store)
    return store


def sweep_parts(recipe: list[str], work: Path) -> dict:
    """The 4 jobs alone, as a sequential sweep and as a parallel one."""
    report: dict = {"alone": []}
    for rate in LEARNING_RATES:
        print(f"alone lr={rate} (load {loadavg()})", flush=True)
        store = fresh_store(work, f"alone-{rate}")
        wall, _, _ = pipeline([*recipe, f"training.learning_rate={rate}"], store, "job")
        report["alone"].append({"wall_s": wall, **jobs(store)[0]})
    for part, extra in (("sequential", []), ("parallel", ["sweep=parallel"])):
        print(f"{part} sweep (load {loadavg()})", flush=True)
        store = fresh_store(work, part)
        wall, _, _ = pipeline(
            ["-m", *extra, *recipe, f"training.learning_rate={','.join(LEARNING_RATES)}"], store, part
        )
        report[part] = {"wall_s": wall, "jobs_per_hour": len(LEARNING_RATES) * 3600 / wall, "jobs": jobs(store)}
    return report


def scale_part(recipe: list[str], sizes: tuple[int, ...], stsb: Path, work: Path) -> list[dict]:
    """Time to the first step and peak RSS for train files of each size (3 steps, no baseline)."""
    rows = []
    for size in sizes:
        folder = work / f"pairs-{size}"
        started = time.perf_counter()
        train = write_pairs(folder, size, stsb)
        written = time.perf_counter() - started
        print(f"scale {size} rows: {train.stat().st_size / 1e6:.0f} MB written in {written:.0f} s", flush=True)
        store = fresh_store(work, f"scale-{size}")
        args = [*(a for a in recipe if not a.startswith(("data=", "data.local_dir=", "training.max_steps="))), "data=stsb", f"data.local_dir={folder}", "data.train_columns=[anchor,positive]",
                "training.max_steps=3", "baseline=false", "stages=[load,train]"]  # fmt: skip
        wall, peak, _ = pipeline(args, store, "job")
        (job,) = jobs(store)
        rows.append({"rows": size, "file_bytes": train.stat().st_size, "wall_s": wall, "peak_rss_bytes": peak,
                     "first_step_s": job["startup_s"], "job_first_step_s": job["first_step_s"]})  # fmt: skip
        for path in folder.iterdir():  # a 10M-row file is ~2 GB: not kept beside the next
            path.unlink()
    return sorted(rows, key=lambda row: row["rows"])


def summary(report: dict) -> dict:
    """The figures the targets are stated in."""
    out: dict = {}
    if "sequential" in report:
        alone, sweep = report["alone"], report["sequential"]
        budget = alone[0]["wall_s"] + sum(job["job_s"] - job["first_step_s"] for job in alone[1:])
        out["sequential_over_alone"] = sweep["wall_s"] / budget  # target <= 1.10
        out["alone_budget_s"] = budget
        out["jobs_2_on_first_step_s"] = [job["first_step_s"] for job in sweep["jobs"][1:]]  # target <= 3 s each
        by_rate = {job["learning_rate"]: job for job in alone}
        out["final_metrics_equal_alone"] = all(
            job["final"] == by_rate[job["learning_rate"]]["final"] for job in sweep["jobs"]
        )
        out["reused_baseline_equal_computed"] = all(job["baseline"] == alone[0]["baseline"] for job in sweep["jobs"])
        out["jobs_per_hour"] = {part: report[part]["jobs_per_hour"] for part in ("sequential", "parallel")}
        out["faster"] = max(out["jobs_per_hour"], key=out["jobs_per_hour"].get)
    if report.get("scale"):
        small, rows = report["scale"][0], report["scale"]
        out["scale_rss_growth_over_file"] = {
            row["rows"]: (row["peak_rss_bytes"] - small["peak_rss_bytes"]) / row["file_bytes"] for row in rows[1:]
        }  # target <= 1.5
    return out


def markdown(report: dict) -> str:
    m, s = report["machine"], report["summary"]
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])} ({m['kind']}), torch {m['torch']}  ",
             f"Load (1/5/15 min) before: {report['load_before']}, after: {report['load_after']}", ""]  # fmt: skip
    if "sequential" in report:
        lines += ["| run | lr | wall s | start -> first step s | training s | after training s | baseline | model | data |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        rows = [("alone", job["wall_s"], job) for job in report["alone"]]
        rows += [(f"{part} job {i + 1}", None, job) for part in ("sequential", "parallel") for i, job in enumerate(report[part]["jobs"])]  # fmt: skip
        for name, wall, job in rows:
            lines.append(f"| {name} | {job['learning_rate']} | {f'{wall:.1f}' if wall else ''} | {job['first_step_s']:.1f} | "
                         f"{job['train_s']:.1f} | {job['after_training_s']:.1f} | {job['baseline_cache']} | "
                         f"{job['load_cache_model']} | {job['load_cache_data']} |")  # fmt: skip
        lines += ["", f"- sequential sweep wall {report['sequential']['wall_s']:.1f} s against job 1 alone + jobs 2-4's "
                  f"training and final evaluation {s['alone_budget_s']:.1f} s: **{s['sequential_over_alone']:.3f}x** (target <= 1.10)",
                  f"- jobs 2-4 of the sequential sweep, start -> first step: {', '.join(f'{v:.1f}' for v in s['jobs_2_on_first_step_s'])} s (target <= 3)",
                  f"- jobs per hour: sequential {s['jobs_per_hour']['sequential']:.1f}, parallel {s['jobs_per_hour']['parallel']:.1f}: {s['faster']} is faster here",
                  f"- every sweep job's final metrics equal its job alone's: {s['final_metrics_equal_alone']}; "
                  f"reused baselines equal the computed one: {s['reused_baseline_equal_computed']}", ""]  # fmt: skip
    if report.get("scale"):
        lines += [
            "| train rows | file MB | process start -> first step s | peak RSS MB | wall s |",
            "|---|---|---|---|---|",
        ]
        for row in report["scale"]:
            lines.append(f"| {row['rows']:,} | {row['file_bytes'] / 1e6:.0f} | {row['first_step_s']:.1f} | "
                         f"{row['peak_rss_bytes'] / 1e6:.0f} | {row['wall_s']:.1f} |")  # fmt: skip
        growth = ", ".join(f"{rows:,} rows {ratio:.2f}x" for rows, ratio in s["scale_rss_growth_over_file"].items())
        lines.append(f"\n- peak RSS growth over the smallest run, per byte of train file: {growth} (target <= 1.5)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Sequential and parallel sweeps against jobs alone; data scale.")
    parser.add_argument("--data", default="../shared/data/stsb", help="STS Benchmark folder (train, dev, test .csv)")
    parser.add_argument("--parts", nargs="+", choices=("sweeps", "scale"), default=["sweeps", "scale"])
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="train rows of the scale part")
    parser.add_argument("--quick", action="store_true", help="check the benchmark: model=tiny, 5 steps, small N")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the .json and .md")
    args = parser.parse_args()
    stsb = (REPO / args.data).resolve() if not Path(args.data).is_absolute() else Path(args.data)
    if not (stsb / "train.csv").is_file():
        raise SystemExit(f"--data {args.data}: no train.csv there; point it at the STSb folder (../shared/data/stsb).")
    recipe = [*RECIPE, f"data.local_dir={stsb}", *(QUICK if args.quick else ())]
    sizes = tuple(args.sizes) if args.sizes else QUICK_SCALE if args.quick else SCALE
    report: dict = {"command": " ".join(["benchmarks/bench_sweep.py", *sys.argv[1:]]), "quick": args.quick,
                    "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load_before": loadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        if "sweeps" in args.parts:
            report.update(sweep_parts(recipe, Path(folder)))
        if "scale" in args.parts:
            report["scale"] = scale_part(recipe, sizes, stsb, Path(folder))
    report["load_after"] = loadavg()
    report["summary"] = summary(report)
    stem = f"bench_sweep-{time.strftime('%Y%m%d-%H%M')}-{report['machine']['kind']}{'-quick' if args.quick else ''}"
    write_results(report, Path(args.out), stem, markdown)


if __name__ == "__main__":
    main()

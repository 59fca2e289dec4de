"""Start-up to the first training step of the default recipe, two sides interleaved round by round.

The ``bench_cpu`` pipeline contender (STSb pairs, ``baseline=false``, ``training.max_steps=1``) as a
subprocess, its ``startup_seconds`` (process start to the first step) and ``job_seconds_to_first_step``
read from its run. Sides (``--sides``, any two or more):

- ``checked``: packing's packed-vs-padded check runs (its kept results, ``packing.verdicts()``, emptied
  before the run: a first job on this machine and model);
- ``kept``: the check's result read back from ``packing.verdicts()`` (every later job);
- ``gc_on``: ``kept`` with Python's garbage collector left running through start-up
  (``PIPELINE_GC_PAUSE=0``; by default ``runtime.collector`` holds it off until the model is built);
- ``audit_off``: ``kept`` without the leakage audit (``data.leakage=off``; by default ``warn`` runs it in a
  thread beside the start-up);
- ``plain_bf16``: the plain sentence-transformers script with ``bf16=True`` (``benchmarks/plain_st.py``).

Every round runs each side once, the order rotating round by round, into one store made before round 1.
Reported: median start-up per side, and each side minus the first, round by round.
Writes ``benchmarks/results/bench_startup-<date>-<cpu kind>.json`` and ``.md``.

    .venv/bin/python benchmarks/bench_startup.py --data ../shared/data/stsb --rounds 6
    .venv/bin/python benchmarks/bench_startup.py --data ../shared/data/stsb --sides plain_bf16 kept --rounds 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_cpu import create_store, loadavg, machine, run_contender, write_results  # noqa: E402
from benchmarks.bench_floor import uptime  # noqa: E402
from pipeline.runtime.collector import ENV  # noqa: E402

SIDES = ("checked", "kept", "gc_on", "audit_off", "plain_bf16")


def run_side(side: str, data: str, work: Path) -> dict:
    from pipeline.runtime import packing

    if side == "checked":
        shutil.rmtree(packing.verdicts(), ignore_errors=True)
    name = "plain_bf16" if side == "plain_bf16" else "pipeline_cpu"
    collector = os.environ.pop(ENV, None)
    if side == "gc_on":
        os.environ[ENV] = "0"
    try:
        extra = ("data.leakage=off",) if side == "audit_off" else ()
        result = run_contender(name, data, work, max_steps=1, extra=extra)
    finally:
        os.environ.pop(ENV, None)
        if collector is not None:
            os.environ[ENV] = collector
    if side != "plain_bf16":
        import mlflow

        run = mlflow.MlflowClient(f"sqlite:///{work}/store/mlflow.db").get_run(result["run_id"])
        result["job_s"] = run.data.metrics.get("job_seconds_to_first_step")
        result["packing"] = run.data.tags.get("packing")
    return result


def run(args) -> dict:
    report = {
        "command": " ".join(["benchmarks/bench_startup.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "uptime_before": uptime(),
        "load_before": loadavg(),
        "rounds": args.rounds,
        "sides": args.sides,
    }
    runs: dict[str, list[dict]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        work = Path(folder)
        create_store(work / "store")
        run_side("kept", args.data, work)  # warm-up: page cache, the store's first run, a kept check
        for index in range(args.rounds):
            shift = index % len(args.sides)
            for side in args.sides[shift:] + args.sides[:shift]:
                runs[side].append(run_side(side, args.data, work))
                print(side, index, f"{runs[side][-1]['startup_s']:.2f}", flush=True)
    first = args.sides[0]
    report.update(
        runs=runs,
        startup_median={side: statistics.median(r["startup_s"] for r in runs[side]) for side in args.sides},
        minus_first={
            side: [b["startup_s"] - a["startup_s"] for a, b in zip(runs[first], runs[side])] for side in args.sides[1:]
        },
        load_after=loadavg(),
        uptime_after=uptime(),
    )
    report["minus_first_median"] = {side: statistics.median(d) for side, d in report["minus_first"].items()}
    return report


def markdown(report: dict) -> str:
    m, first = report["machine"], report["sides"][0]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu']}, flags {' '.join(m['flags'])}, torch {m['torch']}  ",
        f"Load before: {report['load_before']}, after: {report['load_after']}; rounds: {report['rounds']}",
        "",
        f"| side | start-up s (median) | round by round | minus {first}, median | minus {first}, round by round |",
        "|---|---|---|---|---|",
    ]
    for side in report["sides"]:
        each = ", ".join(f"{r['startup_s']:.2f}" for r in report["runs"][side])
        diffs = report["minus_first"].get(side)
        diff = f"{report['minus_first_median'][side]:+.2f}" if diffs else ""
        lines.append(
            f"| {side} | {report['startup_median'][side]:.2f} | {each} | {diff} | "
            f"{', '.join(f'{d:+.2f}' for d in diffs) if diffs else ''} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/stsb", help="STS Benchmark folder (train.csv)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, every side once each")
    parser.add_argument(
        "--sides", nargs="+", choices=SIDES, default=["checked", "kept"], help="the first is the reference"
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the .json and .md")
    args = parser.parse_args()
    args.data = args.data if Path(args.data).is_absolute() else str((REPO / args.data).resolve())
    if not (Path(args.data) / "train.csv").is_file():
        raise SystemExit(f"--data {args.data}: no train.csv there; point it at the STS Benchmark folder.")
    report = run(args)
    write_results(
        report, Path(args.out), f"bench_startup-{time.strftime('%Y%m%d-%H%M')}-{report['machine']['kind']}", markdown
    )


if __name__ == "__main__":
    main()

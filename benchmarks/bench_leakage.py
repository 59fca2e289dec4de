"""The leakage audit's cost against reading and checking the data, on one data folder.

Reads the folder with the load stage (``data.leakage=off``: read and cell checks only), then runs the
audit alone (``pipeline.stages.leakage.audit``) on what was read; each ``--repeats`` times, the best kept.
``--before FILE``: also an earlier ``leakage.py`` (say ``git show REV:pipeline/stages/leakage.py``) on
the same rows, the two interleaved (the order alternates each repeat), and their counts compared.

``--first-step N``: instead, what the audit adds to a whole job's time before its first training step:
N rounds of the same job (all-MiniLM-L6-v2, 3 steps, no baseline, the final evaluation on the folder's dev
and test splits, which the audit compares with the train rows) with ``data.leakage=off`` and ``warn``,
alternating (the order flips each round) after one unmeasured job of each (the datasets cache of the CSV,
the OS file cache); medians of ``startup_seconds`` (process start to step 1) and ``job_seconds``. Each
warn job must have logged its ``leakage/*`` metrics and each off job none, or the benchmark stops.

    .venv/bin/python benchmarks/make_pairs.py --rows 1000000 --out /tmp/pairs-1m
    .venv/bin/python benchmarks/bench_leakage.py --data /tmp/pairs-1m
    .venv/bin/python benchmarks/bench_leakage.py --data /tmp/pairs-1m --first-step 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from pipeline import CONF_DIR
from pipeline.stages import leakage, load
from pipeline.stages.spec import read_spec


def earlier(path: Path):
    """An earlier leakage module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("leakage_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def measure(data: Path, columns: str, repeats: int, before: Path | None) -> dict:
    overrides = ["data=stsb", f"data.local_dir={data}", f"data.train_columns={columns}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        audited = read_spec(compose("config", overrides=overrides))  # the default setting: warn
        spec = read_spec(compose("config", overrides=[*overrides, "data.leakage=off"]))
    audits = {"audit": leakage}
    if before is not None:
        old = earlier(before)
        audits["before"] = old
    times: dict[str, list[float]] = {"read_check": [], **{name: [] for name in audits}}
    counts = {}
    for repeat in range(repeats):
        started = time.perf_counter()
        loaded = load.load_data(spec)
        times["read_check"].append(time.perf_counter() - started)
        for name in sorted(audits, reverse=repeat % 2 == 1):
            module = audits[name]
            settings = module.Settings(module.Mode(audited.leakage.mode.value), audited.leakage.threshold)
            started = time.perf_counter()
            found, _ = module.audit(loaded.train_splits, loaded.eval_splits, settings)
            times[name].append(time.perf_counter() - started)
            counts[name] = found.counts
    rows = {name: len(split.dataset) for name, split in loaded.all_splits()}
    best = {f"{name}_s": min(values) for name, values in times.items()}
    ratios = {f"{name}_over_read_check": best[f"{name}_s"] / best["read_check_s"] for name in audits}
    return {"rows": rows, **best, **ratios, "all_s": times, "counts": counts["audit"],
            "same_counts": all(c == counts["audit"] for c in counts.values())}  # fmt: skip


# The evaluate stage stays: without it the job reads no evaluation split, and the audit has nothing to compare.
FIRST_STEP = (
    "model=minilm",
    "training.max_steps=3",
    "baseline=false",
    "tracking.log_model=false",
)


def audit_metrics(store: Path) -> dict[str, float]:
    """The one run's ``leakage/*`` metrics."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {k: v for k, v in run.data.metrics.items() if k.startswith("leakage/")}


def first_step(data: Path, columns: str, rounds: int) -> dict:
    """Process start to the first step and the whole job, ``data.leakage=off`` against ``warn``, alternating."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpu import create_store, loadavg
    from bench_sweep import jobs, pipeline

    recipe = [*FIRST_STEP, "data=stsb", f"data.local_dir={data}", f"data.train_columns={columns}"]
    times: dict[str, dict[str, list[float]]] = {mode: {"startup_s": [], "job_s": []} for mode in ("off", "warn")}
    loads = [loadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-leakage-") as work:
        for round_ in range(rounds + 1):
            for mode in ("off", "warn") if round_ % 2 == 0 else ("warn", "off"):
                store = Path(work) / f"{mode}-{round_}"
                create_store(store)
                pipeline([*recipe, f"data.leakage={mode}"], store, "job")
                (job,) = jobs(store)
                audited = audit_metrics(store)  # warn: the audit ran and was logged; off: nothing
                if bool(audited) != (mode == "warn"):
                    raise SystemExit(f"data.leakage={mode}: leakage metrics {audited}")
                if round_ > 0:  # round 0 warms the caches
                    times[mode]["startup_s"].append(job["startup_s"])
                    times[mode]["job_s"].append(job["job_s"])
                print(f"round {round_} {mode}: first step {job['startup_s']:.2f} s (load {loadavg()})", flush=True)
            loads.append(loadavg())
    medians = {mode: {k: statistics.median(v) for k, v in parts.items()} for mode, parts in times.items()}
    ratio = medians["warn"]["startup_s"] / medians["off"]["startup_s"]
    return {"recipe": recipe, "rounds": rounds, "all": times, "median": medians, "first_step_warn_over_off": ratio,
            "job_warn_over_off": medians["warn"]["job_s"] / medians["off"]["job_s"], "loadavg": loads}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="The leakage audit's time against the data's read and check.")
    parser.add_argument("--data", required=True, help="a folder of train.csv, dev.csv, test.csv")
    parser.add_argument("--columns", default="[anchor,positive]", help="data.train_columns")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an earlier leakage.py, timed interleaved with this one")
    parser.add_argument("--first-step", type=int, metavar="ROUNDS", help="time whole jobs to their first step instead")
    args = parser.parse_args()
    if args.first_step:
        found = first_step(Path(args.data), args.columns, args.first_step)
        out = Path(__file__).parent / "results" / f"bench_leakage-{time.strftime('%Y%m%d-%H%M')}-first-step.json"
        out.write_text(json.dumps(found, indent=1) + "\n")
        print(json.dumps(found, indent=1), f"\nraw results: {out}", sep="\n")
        return
    print(json.dumps(measure(Path(args.data), args.columns, args.repeats, args.before), indent=1))


if __name__ == "__main__":
    main()

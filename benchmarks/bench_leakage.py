"""The leakage audit's cost against reading and checking the data, on one data folder.

Reads the folder with the load stage (``data.leakage=off``: read and cell checks only), then runs the
audit alone (``pipeline.stages.leakage.audit``) on what was read; each ``--repeats`` times, the best kept.
``--before FILE``: also an earlier ``leakage.py`` (say ``git show REV:pipeline/stages/leakage.py``) on
the same rows, the two interleaved (the order alternates each repeat), and their counts compared.

    .venv/bin/python benchmarks/make_pairs.py --rows 1000000 --out /tmp/pairs-1m
    .venv/bin/python benchmarks/bench_leakage.py --data /tmp/pairs-1m
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description="The leakage audit's time against the data's read and check.")
    parser.add_argument("--data", required=True, help="a folder of train.csv, dev.csv, test.csv")
    parser.add_argument("--columns", default="[anchor,positive]", help="data.train_columns")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an earlier leakage.py, timed interleaved with this one")
    args = parser.parse_args()
    print(json.dumps(measure(Path(args.data), args.columns, args.repeats, args.before), indent=1))


if __name__ == "__main__":
    main()

"""The leakage audit's cost against reading and checking the data, on one data folder.

Reads the folder with the load stage (``data.leakage=off``: read and cell checks only), then runs the
audit alone (``pipeline.stages.leakage.audit``) on what was read; each ``--repeats`` times, the best kept.

    .venv/bin/python benchmarks/make_pairs.py --rows 1000000 --out /tmp/pairs-1m
    .venv/bin/python benchmarks/bench_leakage.py --data /tmp/pairs-1m
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from pipeline import CONF_DIR
from pipeline.stages import leakage, load
from pipeline.stages.spec import read_spec


def measure(data: Path, columns: str, repeats: int) -> dict:
    overrides = ["data=stsb", f"data.local_dir={data}", f"data.train_columns={columns}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        audited = read_spec(compose("config", overrides=overrides))  # the default setting: warn
        spec = read_spec(compose("config", overrides=[*overrides, "data.leakage=off"]))
    read_s, audit_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        loaded = load.load_data(spec)
        read_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        found, _ = leakage.audit(loaded.train_splits, loaded.eval_splits, audited.leakage)
        audit_s.append(time.perf_counter() - started)
    rows = {name: len(split.dataset) for name, split in loaded.all_splits()}
    return {"rows": rows, "read_check_s": min(read_s), "audit_s": min(audit_s), "counts": found.counts,
            "audit_over_read_check": min(audit_s) / min(read_s)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="The leakage audit's time against the data's read and check.")
    parser.add_argument("--data", required=True, help="a folder of train.csv, dev.csv, test.csv")
    parser.add_argument("--columns", default="[anchor,positive]", help="data.train_columns")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(Path(args.data), args.columns, args.repeats), indent=1))


if __name__ == "__main__":
    main()

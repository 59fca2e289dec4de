"""LoRA (``model.peft``) against full fine-tuning on the CPU recipe: trainable parameters, peak memory
and training speed, each job a real ``python -m pipeline`` run in its own process.

    .venv/bin/python -m benchmarks.bench_lora [rounds=1] [steps=6] [r=8]

Each round runs both jobs (the order alternates) on the default job (all-MiniLM-L6-v2, MNRL, the
bundled example pairs, batch 32) for ``steps`` steps with no evaluation, under ``/usr/bin/time -v``
(peak resident memory of the process), into a temporary MLflow store, from which it reads
``train_samples_per_second`` and the parameter counts. Prints one line per job and the LoRA / full ratios.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from pipeline import REPO_ROOT


def run(name: str, overrides: list[str], folder: Path, steps: int) -> dict[str, float]:
    store = f"sqlite:///{folder}/mlflow.db"
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "pipeline", f"training.max_steps={steps}",
               "evaluator.splits=[]", "tracking.log_model=false", f"tracking.uri={store}",
               f"tracking.run_name={name}", f"hydra.run.dir={folder}/{name}", *overrides]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    import mlflow

    client = mlflow.MlflowClient(store)
    [found] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"attributes.run_name = '{name}'"
    )
    metrics = found.data.metrics
    return {"samples_per_s": metrics["train_samples_per_second"], "peak_mib": peak_kb / 1024,
            "trainable": metrics.get("peft_trainable_parameters", 0.0),
            "total": metrics.get("peft_total_parameters", 0.0)}  # fmt: skip


def main() -> None:
    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    rounds, steps, r = int(options.get("rounds", 1)), int(options.get("steps", 6)), int(options.get("r", 8))
    jobs = {"full": [], "lora": [f"model.peft.r={r}"]}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in jobs}
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as folder:
        for round_ in range(rounds):
            order = list(jobs) if round_ % 2 == 0 else list(reversed(jobs))
            for name in order:
                result = run(f"{name}-{round_}", jobs[name], Path(folder), steps)
                results[name].append(result)
                print(f"round {round_} {name}: {result}", flush=True)
    summary = {name: {key: median(r[key] for r in rows) for key in rows[0]} for name, rows in results.items()}
    for name, values in summary.items():
        print(f"{name}: " + ", ".join(f"{key} {value:.1f}" for key, value in values.items()))
    full, lora = summary["full"], summary["lora"]
    base = lora["total"] - lora["trainable"]  # full fine-tuning trains every parameter of the base model
    print(f"trainable parameters: lora {lora['trainable']:.0f}, full {base:.0f} ({lora['trainable'] / base:.2%})")
    print(f"lora/full: samples/s {lora['samples_per_s'] / full['samples_per_s']:.2f}x, "
          f"peak memory {lora['peak_mib'] / full['peak_mib']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

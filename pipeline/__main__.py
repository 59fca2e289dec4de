"""``python -m pipeline [overrides]``: compose the config with Hydra and run one job per config.

A user mistake (bad config value, bad data, unreachable tracking server) prints one message that
says how to fix it and exits with status 2, without a traceback; set ``PIPELINE_TRACEBACK=1`` to
see one. Ctrl-C and SIGTERM end the MLflow run KILLED and exit 130.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline import PipelineError



def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pipeline.job import run_job
    from pipeline.tracking import ui_command

    signal.signal(signal.SIGTERM, _interrupt)
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    choices = dict(hydra_cfg.runtime.choices)
    try:
        result = run_job(cfg, Path(hydra_cfg.runtime.output_dir), overrides, choices)
    except PipelineError as error:
        if os.environ.get("PIPELINE_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the MLflow run was ended KILLED", file=sys.stderr)
        sys.exit(130)
    print(f"\nMLflow run {result.run_id} FINISHED (experiment {cfg.tracking.experiment_name!r})")
    for name in sorted(result.metrics):
        print(f"  {name:<40} {result.metrics[name]:.4f}")
    print(f"Open it: {ui_command(str(cfg.tracking.uri))}")
    print(f"  then http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.run_id}")
    return result.optimized_metric


if __name__ == "__main__":
    main()

"""``python -m pipeline [overrides]``: compose the config with Hydra and run one job per config.

A user mistake (bad config value, bad data, unreachable tracking server) prints one message that
says how to fix it and exits with status 2, without a traceback; set ``PIPELINE_TRACEBACK=1`` to
see one. Ctrl-C and SIGTERM during training stop at the next step with a checkpoint (a second
signal stops at once); the MLflow run ends KILLED and the command exits 130.

In a multirun (``-m``) every job is a child of the sweep's parent run (see ``pipeline.sweep``): a
failed job is recorded as a FAILED child and the sweep goes on; the sweep exits 1 at the end.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline import PipelineError, run_command

if TYPE_CHECKING:
    from pipeline.sweep import Sweep

log = logging.getLogger("pipeline")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pipeline import launch
    from pipeline import sweep as sweeps
    from pipeline.checkpoint import install_signal_handlers
    from pipeline.job import run_job
    from pipeline.tracking import ui_command

    install_signal_handlers()
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    choices = dict(hydra_cfg.runtime.choices)
    sweep = sweeps.current() if hydra_cfg.mode == RunMode.MULTIRUN else None
    if sweep is not None:
        return _sweep_job(cfg, sweep, int(hydra_cfg.job.num), Path(hydra_cfg.runtime.output_dir), overrides, choices)
    try:
        runner = launch.run_launched if launch.wanted(cfg.hardware) else run_job  # several processes: ranks run it
        result = runner(cfg, Path(hydra_cfg.runtime.output_dir), overrides, choices)
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


def _sweep_job(cfg: DictConfig, sweep: Sweep, job_number: int, output_dir: Path, overrides: list[str], choices: dict[str, str]) -> float | None:
    """One job of a sweep: a child run; a failure is recorded (FAILED child) and the sweep goes on."""
    from pipeline import launch
    from pipeline import sweep as sweeps
    from pipeline.job import run_job

    run_name = sweeps.job_run_name(sweep, overrides, str(cfg.name))
    try:
        sweeps.prepare_job(cfg, sweep)
        runner = launch.run_launched if launch.wanted(cfg.hardware) else run_job  # several processes: ranks run it
        result = runner(cfg, output_dir, overrides, choices, extra_tags=sweeps.job_tags(sweep, job_number), run_name=run_name)
        value = sweeps.objective(sweep, cfg.get("optimized_metric"), result.metrics) if sweep.needs_metric else result.optimized_metric
    except KeyboardInterrupt:
        sweeps.INTERRUPTED["value"] = True
        print("interrupted: the MLflow runs were ended KILLED", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - any job failure is recorded and the sweep goes on
        if os.environ.get("PIPELINE_TRACEBACK"):
            log.exception("job %d failed", job_number)
        run_id = sweeps.record_failure(sweep, job_number, run_name, overrides, error, cfg)
        print(f"job {job_number} ({run_name}) FAILED, MLflow run {run_id}: {error}", file=sys.stderr)
        return None
    print(f"job {job_number} ({run_name}) FINISHED, MLflow run {result.run_id}: {cfg.optimized_metric}={value}")
    return value


if __name__ == "__main__":
    run_command(main)

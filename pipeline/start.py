"""Start a job where its hardware profile says: in this process, or across ranks through ``accelerate
launch`` (``hardware.num_processes > 1``). Every command that runs a job goes through
:func:`start_job`: ``python -m pipeline``, ``pipeline.rerun``, ``pipeline.resume``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipeline import tracking
from pipeline.job import JobRequest, JobResult, run_job
from pipeline.runtime import collector, launch
from pipeline.stages import schema, validate
from pipeline.stages.spec import read_spec


def start_job(cfg: DictConfig, output_dir: Path, request: JobRequest) -> JobResult:
    """Run the job here, or start its ranks and return rank 0's result (same arguments as ``run_job``).
    The garbage collector waits until the model is built (``runtime.collector``)."""
    collector.pause()
    try:
        schema.check_keys(cfg, request.choices)  # an unknown key in a file or override: refused, naming the file
        if not launch.wanted(cfg.hardware):
            return run_job(cfg, output_dir, request)
        validate.check_config(read_spec(cfg))  # fail in seconds, before any process starts
        tracking.check_target(cfg.tracking)
        return JobResult(**launch.run_launched(cfg, output_dir, request.as_dict()))
    finally:
        collector.release()

"""Start a job where its hardware profile says: in this process, or across ranks through ``accelerate
launch`` (``hardware.num_processes > 1``). Every command that runs a job goes through
:func:`start_job`: ``python -m pipeline``, ``pipeline.rerun``, ``pipeline.resume``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig

from pipeline import tracking
from pipeline.job import JobResult, Resume, run_job
from pipeline.runtime import launch
from pipeline.stages import schema, validate
from pipeline.stages.spec import read_spec


def start_job(
    cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None, run_name: str | None = None, resume: Resume | None = None,
) -> JobResult:  # fmt: skip
    """Run the job here, or start its ranks and return rank 0's result (same arguments as ``run_job``)."""
    schema.check_keys(cfg, choices)  # an unknown key in a file or override: refused, naming the file
    if not launch.wanted(cfg.hardware):
        return run_job(cfg, output_dir, overrides, choices, extra_tags=extra_tags, run_name=run_name, resume=resume)
    validate.check_config(read_spec(cfg))  # fail in seconds, before any process starts
    tracking.check_target(cfg.tracking)
    job = {
        "overrides": list(overrides),
        "choices": dict(choices or {}),
        "extra_tags": dict(extra_tags or {}),
        "run_name": run_name,
        "resume": dataclasses.asdict(resume) if resume else None,
    }
    return JobResult(**launch.run_launched(cfg, output_dir, job))

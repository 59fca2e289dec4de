"""``python -m pipeline [overrides]``: compose the config with Hydra and run one job per config.

A user mistake (bad config value or override, bad data, unreachable tracking server) prints one
message that says how to fix it and exits with status 2, without a traceback; set
``PIPELINE_TRACEBACK=1`` to see one. Ctrl-C and SIGTERM during training stop at the next step with a
checkpoint (a second signal stops at once); the MLflow run ends KILLED and the command exits 130.

In a multirun (``-m``) every job is a child of the sweep's parent run (see ``pipeline.sweep``):
a failed job is recorded as a FAILED child and the sweep goes on; the sweep exits 1 at the end.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline import PipelineError
from pipeline.cli import TRACEBACK_ENV, one_line, print_summary, reported, run_command, whole_lines
from pipeline.hydra_files import refuse_hydra_copies
from pipeline.runtime import (
    catalogue,  # noqa: F401 - registers ${first_dev_metric:...}, optimized_metric's default
    collector,
)

log = logging.getLogger("pipeline")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pipeline import sweep as sweeps
    from pipeline.job import JobRequest
    from pipeline.runtime.checkpoint import install_signal_handlers
    from pipeline.start import start_job
    from pipeline.tracking.sweep import current as current_sweep

    install_signal_handlers()
    whole_lines()  # a joblib worker's lines too: its jobs share the sweep's pipe
    hydra_cfg = HydraConfig.get()
    overrides, choices = list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = current_sweep() if hydra_cfg.mode == RunMode.MULTIRUN else None
    request = JobRequest(overrides=overrides, choices=choices)
    if sweep is not None:
        return sweeps.run_sweep_job(cfg, sweep, int(hydra_cfg.job.num), output_dir, request, start_job)
    with reported():
        result = start_job(cfg, output_dir, request)
    if not result.run_id:  # machine_rank > 0 of a multi-node job: machine 0 logs the run
        print(f"\nMachine {cfg.hardware.machine_rank}: its ranks finished; machine 0 logged the MLflow run.")
        return None
    print_summary(result, f"experiment {str(cfg.tracking.experiment_name)!r}", str(cfg.tracking.uri))
    return result.optimized_metric


def entry() -> None:
    """Hydra's own config errors (an unknown key or option, a bad override) are user mistakes too:
    one line, exit 2. Hydra raises them to us only with ``HYDRA_FULL_ERROR`` set."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    collector.pause()  # through Hydra's composition and the imports, until the model is built
    with reported():
        refuse_hydra_copies(sys.argv[1:])
        try:
            main()
        except (HydraException, OmegaConfBaseException) as error:
            if os.environ.get(TRACEBACK_ENV):
                raise
            from pipeline.stages import schema

            message = one_line(str(error)).split(" Config search path:")[0]
            refused = re.match(r"Could not override '([^']+)'", message)
            unknown = schema.unknown_path(refused.group(1)) if refused else None
            if unknown is not None:
                raise PipelineError(unknown.describe(None)) from None
            placed = re.search(r"Could not find '(guide|miner)/([^']+)'", message)
            if placed:  # conf/guide/ and conf/miner/ keep the former spelling of two options only
                key, option = placed.groups()
                raise PipelineError(
                    f"command line: {key}={option}: no such option; a {key} is any option of conf/model/, placed with "
                    f"model@{key}={option} (in a defaults list: override /model@{key}: {option})."
                ) from None
            cause = f" ({one_line(str(error.__cause__)).split(' full_key:')[0]})" if error.__cause__ else ""
            raise PipelineError(
                f"{message}{cause}: fix the override (python -m pipeline --help lists the groups)."
            ) from None
        except Exception as error:
            from pipeline import sweep as sweeps

            reason = sweeps.lost_worker(error)
            if reason is None or os.environ.get(TRACEBACK_ENV):
                raise
            print(f"error: {reason}; its MLflow runs end FAILED", file=sys.stderr)
            raise SystemExit(1) from None


if __name__ == "__main__":
    run_command(entry)

"""``python -m pipeline.rank LAUNCH_DIR``: one rank of a multi-process job (started by ``accelerate
launch``, never by hand). It reads the resolved config the launching process wrote, runs the job, and
rank 0 writes the result back (``pipeline.runtime.launch``). A user mistake (``PipelineError``) is left in
the launch folder for the launching process to print, once for the machine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

from pipeline import PipelineError
from pipeline.cli import TRACEBACK_ENV, reported, run_command
from pipeline.job import JobRequest, run_job
from pipeline.runtime import elastic, launch
from pipeline.runtime.checkpoint import install_signal_handlers
from pipeline.runtime.hardware import process_rank


def main(launch_dir: Path) -> int:
    rank = process_rank()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s",
    )
    install_signal_handlers()  # the first SIGTERM / SIGINT in training: a checkpoint at the next step, then KILLED
    job = launch.read_job(launch_dir)
    with reported(interrupted=f"interrupted (rank {rank})", prefix=f"error (rank {rank})"):
        try:
            launch.check_same_config(launch.config_digest(job.config), job.config.hardware)
            request = JobRequest.from_dict(job)
            result = run_job(job.config, launch_dir.parent, request, on_run_start=launch.announce_run)
        except PipelineError as error:  # the launching process prints the reason: one line per machine
            if os.environ.get(TRACEBACK_ENV):
                raise
            elastic.write_refusal(launch_dir, str(error))
            raise SystemExit(2) from None
        except KeyboardInterrupt:  # stopped by the launch because another rank refused: its one line says why
            if elastic.refusal(launch_dir) is not None:
                raise SystemExit(130) from None
            raise
    if rank == 0:
        launch.write_result(launch_dir, dataclasses.asdict(result))
    return 0


if __name__ == "__main__":
    run_command(lambda: main(Path(sys.argv[1])))

"""``python -m pipeline.runtime.elastic ARGS``: ``accelerate launch ARGS`` (torch's elastic agent), quiet
about a rank that refused the job.

A rank that refuses the job (a user mistake: a machine started with another config, bad data) writes
the one-line reason to ``refused.txt`` in its launch folder and exits 2 (``pipeline.rank``); the
launching process prints that line and nothing else (``pipeline.runtime.launch``). The elastic agent
would first log the rank's exit and end in a ``ChildFailedError`` traceback with a failure summary:
after a refusal, this drops the agent's log records and exits with status 2 alone. Any other failure
of a rank is reported as accelerate reports it. Writes nothing to MLflow.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LAUNCH_DIR_ENV = "PIPELINE_LAUNCH_DIR"  # set for the agent and its ranks: where job.yaml, run.json, result.json live
REFUSAL = "refused.txt"  # in the launch folder: a rank's one-line reason for refusing the job


def refusal(launch_dir: Path) -> str | None:
    """The reason a rank of this launch refused the job, or None."""
    path = launch_dir / REFUSAL
    return path.read_text() if path.is_file() else None


def write_refusal(launch_dir: Path, reason: str) -> None:
    """A rank's reason for refusing the job; the first rank's stays (on a config mismatch every rank refuses)."""
    try:
        with open(launch_dir / REFUSAL, "x") as file:
            file.write(reason)
    except FileExistsError:
        pass


def main(argv: list[str]) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    launch_dir = Path(os.environ[LAUNCH_DIR_ENV])
    # the agent's "failed (exitcode: 2) local_rank: ..." record
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(lambda _: refusal(launch_dir) is None)
    try:
        launch_command(launch_command_parser().parse_args(argv))
    except ChildFailedError:
        if refusal(launch_dir) is None:
            raise
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

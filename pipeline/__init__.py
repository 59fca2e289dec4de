"""Training pipeline for sentence-embedding models: Hydra config -> load -> train -> evaluate -> MLflow.

Importing this package is cheap (no torch): it registers the ``${repo_root:}`` resolver that the
configs use to find the bundled data and the default MLflow store wherever the command runs from.
"""

import atexit
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"

OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)


class PipelineError(ValueError):
    """A user mistake (config, data, tracking target): reported as one message, no traceback."""


def run_command(main: Callable[[], Any]) -> None:
    """Run a command's ``main`` and end the process without the interpreter's module teardown.

    With torch, transformers and MLflow loaded, that teardown takes about 2 s after the work is done
    and saves nothing. The process still ends in order: non-daemon threads are joined and every
    other exit handler runs first (this one is registered first, so it runs last); logging is shut
    down and the standard streams flushed; the exit status is the command's (``sys.exit`` code, 1
    after an uncaught exception, 130 after Ctrl-C).
    """
    status = {"code": 1}

    def _end() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status["code"])

    atexit.register(_end)
    try:
        code = main()
        status["code"] = 0
        if code is not None:
            sys.exit(code)
    except SystemExit as exit_:
        status["code"] = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        raise
    except KeyboardInterrupt:
        status["code"] = 130
        raise

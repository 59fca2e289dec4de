"""What every command shares: how it ends, how it reports a mistake, its ``--tracking-uri``, its summary.

- :func:`run_command` ends the process without the interpreter's teardown, with the command's status;
- :func:`whole_lines`: each line a process prints leaves in one write (no line spliced into another's);
- :func:`reported`: a user mistake (:class:`pipeline.PipelineError`) prints one line and exits 2
  (``PIPELINE_TRACEBACK=1`` shows the traceback instead); Ctrl-C / SIGTERM exits 130;
- :func:`add_tracking_uri`: the one ``--tracking-uri`` option;
- :func:`parse_args`: a command's arguments, its run ids checked (an empty one is one line, exit 2);
- :func:`print_summary`: the closing lines of a job (its run, status, final metrics).

What these print passes the one scrubber (``pipeline.tracking.scrub``): a store URI's password, or a
value under a secret-looking key, never reaches a console or a CI log.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from pipeline import PipelineError
from pipeline.runtime import collector
from pipeline.tracking.scrub import metric_key, scrub

TRACEBACK_ENV = "PIPELINE_TRACEBACK"
KILLED = "interrupted: the MLflow run was ended KILLED"


def run_command(main: Callable[[], Any]) -> None:
    """Run a command's ``main`` and end the process without the interpreter's module teardown.

    With torch, transformers and MLflow loaded, that teardown takes about 2 s after the work is done
    and saves nothing. The process still ends in order: non-daemon threads are joined and every
    other exit handler runs first (this one is registered first, so it runs last); logging is shut
    down and the standard streams flushed; the exit status is the command's (``sys.exit`` code, 1
    after an uncaught exception, 130 after Ctrl-C). An uncaught exception's traceback (Hydra's crash
    output too: ``HYDRA_FULL_ERROR`` hands it here) is printed scrubbed. The garbage collector waits
    through the command's start (``pipeline.runtime.collector``).
    """
    collector.pause()  # a job lifts it once its model is built; the other commands are short
    whole_lines()
    status = {"code": 1}

    def _end() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
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
    except Exception:  # noqa: BLE001 - what the interpreter would print, without a secret in it
        print(scrub(traceback.format_exc()), end="", file=sys.stderr)


def whole_lines() -> None:
    """Each line this process prints to its standard streams leaves in one write, its newline with it.

    ``print`` writes a line and then its end. Under ``PYTHONUNBUFFERED`` (as CI runners set it) each
    write goes straight to the pipe, and a block-buffered stdout sends a full buffer mid-line.
    Processes that share one pipe (a sweep and its joblib workers, a job's ranks) then splice one's
    line into another's: ``... 3 s leftstep 108/400 ...``, or an ``error:`` line that no longer starts
    its line. Held until its newline, a line of up to the pipe's atomic size (4096 bytes on Linux)
    reaches the reader whole. Idempotent; streams replaced by the caller (a test's capture) are left
    alone."""
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None and stream in (sys.stdout, sys.stderr) and hasattr(stream, "reconfigure"):
            with suppress(ValueError, OSError):
                stream.reconfigure(line_buffering=True, write_through=False)


def one_line(text: str) -> str:
    """A message on one line: its lines joined, blank ones dropped."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


@contextmanager
def reported(
    interrupted: str = KILLED, prefix: str = "error", errors: type[BaseException] = PipelineError, code: int = 2
) -> Iterator[None]:
    """Around a command's work: a user mistake (``errors``) is one line on stderr and exit ``code`` (2);
    Ctrl-C is exit 130."""
    try:
        yield
    except errors as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{prefix}: {scrub(one_line(str(error)))}", file=sys.stderr)
        raise SystemExit(code) from None
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        raise SystemExit(130) from None


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow store (default: $MLFLOW_TRACKING_URI or the repo's mlruns/mlflow.db)",
    )


# Arguments that hold run ids, by their ``dest``: how the command line spells each.
RUN_ID_ARGUMENTS = {"run_id": "RUN_ID", "parent": "--parent", "run": "--run", "runs": "--runs"}


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, intermixed: bool = False) -> argparse.Namespace:
    """The command's arguments. A run id given empty (a script's lookup that came back empty:
    ``--parent ""``) is refused here in one line, exit 2, before MLflow's own check raises."""
    options = (parser.parse_intermixed_args if intermixed else parser.parse_args)(argv)
    with reported():
        for dest, spelling in RUN_ID_ARGUMENTS.items():
            given = getattr(options, dest, None)
            if any(
                value is not None and not str(value).strip()
                for value in (given if isinstance(given, list) else [given])
            ):
                raise PipelineError(
                    f"{spelling} is empty: give a run id (python -m pipeline.compare --experiment NAME lists the runs)."
                )
    return options


def tracking_uri(options: argparse.Namespace) -> str:
    """The ``--tracking-uri`` given, else the default store."""
    from pipeline.tracking import default_tracking_uri

    return options.tracking_uri or default_tracking_uri()


def baseline_intervals(result, tracking_uri: str | None) -> dict:
    """Each final metric's change from the baseline with its interval (sentence-transformers' names ->
    Difference), from the run's items; {} without a store, a baseline or items."""
    if not tracking_uri or not any(n.startswith("baseline/") for n in result.metrics):
        return {}
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import client
    from pipeline.tracking.comparison import from_baseline

    try:
        run = client(tracking_uri).get_run(result.run_id)
        found = from_baseline(client(tracking_uri), run)
    except (PipelineError, MlflowException, OSError) as error:  # the run is ended: say so, show the plain deltas
        logging.getLogger(__name__).warning("No intervals for the baseline deltas: %s", one_line(str(error)))
        return {}
    return {metric_key(name): d for name, d in found.items()}


def print_summary(result, heading: str, tracking_uri: str | None = None) -> None:
    """``MLflow run ID FINISHED (...)``, each final metric (with its change from the ``baseline/`` score
    of the starting model, when there is one, and that change's 95% interval when both logged their
    items: ``pipeline.tracking.comparison.from_baseline``), and how to open the run."""
    from pipeline.tracking.intervals import spelled

    print(f"\nMLflow run {result.run_id} FINISHED ({heading})")
    changes = baseline_intervals(result, tracking_uri)
    for name in sorted(n for n in result.metrics if not n.startswith("baseline/")):
        baseline = result.metrics.get(f"baseline/{name}")
        change = f"{result.metrics[name] - baseline:+.4f}" if baseline is not None else ""
        if metric_key(name) in changes:
            change = spelled(changes[metric_key(name)])
        change = f"  ({change} from baseline {baseline:.4f})" if baseline is not None else ""
        print(f"  {name:<40} {result.metrics[name]:.4f}{change}")
    if tracking_uri:
        from pipeline.tracking import ui_command

        print(f"Open it: {ui_command(tracking_uri)}")
        print(f"  then http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.run_id}")

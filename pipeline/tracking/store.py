"""The tracking target: check it answers, find the default store, open the experiment.

Writes to MLflow: a new SQLite store's tables (created and migrated by one process at a time, under
the file lock ``<db>.lock``), the experiment, created once when missing (with an explicit artifact
location for local stores).
"""

from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import CONF_DIR, PipelineError
from pipeline.tracking.scrub import redact


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_target(tracking: DictConfig, timeout: float = 5.0) -> None:
    """Fail fast (seconds) when the tracking store cannot be used, before any model loads."""
    uri = str(tracking.uri)
    if is_server(uri):
        parts = urllib.parse.urlsplit(uri)
        probe = urllib.request.Request(
            parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl().rstrip("/") + "/health"
        )
        if parts.username:  # credentials in the URI: sent as basic auth, never as part of the URL
            login = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            probe.add_header("Authorization", f"Basic {login}")
            # MLflow prints each ended run's address, credentials included ("View run ... at: URL"); the
            # pipeline's own summary prints it scrubbed
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        try:
            with urllib.request.urlopen(probe, timeout=timeout) as answer:
                answer.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise PipelineError(
                f"tracking.uri={redact(uri)!r} cannot be reached ({reason}): start the server "
                "(mlflow server --host 127.0.0.1 --port 5000) or point tracking.uri at a running one."
            ) from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PipelineError(
                f"tracking.uri={uri!r}: cannot create {path.parent} ({error.strerror}): pick a writable path."
            ) from None
        if path.exists() and not path.is_file():
            raise PipelineError(f"tracking.uri={uri!r}: {path} is not a file: point tracking.uri at a .db file.")
        create_store(uri, path)


# Seconds a job waits for another process that creates or migrates the same SQLite store.
STORE_LOCK_TIMEOUT_S = 300.0


def create_store(uri: str, path: Path) -> None:
    """Open the SQLite store at ``path`` under its file lock: the first process creates and migrates a
    new store (MLflow runs its schema migration in every process that opens a store without tables),
    the others wait and find it ready. MLflow keeps the opened store for the rest of the process."""
    import mlflow
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock")
    try:
        with lock.acquire(timeout=STORE_LOCK_TIMEOUT_S):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Timeout:
        raise PipelineError(
            f"tracking.uri={uri!r}: another process held {lock.lock_file} for {STORE_LOCK_TIMEOUT_S:.0f} s while "
            "creating the store: let it finish (or end it) and start again."
        ) from None


def check_uri(uri: str) -> None:
    """:func:`check_target` for a bare URI (the commands' ``--tracking-uri``)."""
    check_target(OmegaConf.create({"uri": uri}))


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the default store of ``conf/tracking/sqlite.yaml``: where
    the commands that take ``--tracking-uri`` look without one."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return str(OmegaConf.load(CONF_DIR / "tracking" / "sqlite.yaml").uri)


def client(uri: str):
    """An ``MlflowClient`` on ``uri``."""
    import mlflow

    return mlflow.MlflowClient(uri)


def open_experiment(tracking: DictConfig) -> str:
    """Set the tracking URI and return the experiment id, creating it once if missing.

    Local stores get an explicit artifact location under ``tracking.artifact_root`` (MLflow would
    otherwise put artifacts in ``./mlruns`` of whatever the current directory is).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    # Asynchronous metrics wait on this many seconds of buffering, which a run's end cuts short; unset,
    # MLflow's logging thread sleeps in a 1 s queue poll that every flush and end_run wait out (1.7 s a run).
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
    mlflow.set_tracking_uri(str(tracking.uri))
    name = str(tracking.experiment_name)
    store = mlflow.MlflowClient()
    experiment = store.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not is_server(str(tracking.uri)) and tracking.artifact_root:
        folder = Path(str(tracking.artifact_root)) / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = folder.resolve().as_uri()
    try:
        return store.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a parallel job
        experiment = store.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def ui_command(tracking_uri: str) -> str:
    """How to look at the store, for the console: a password in the URI is shown as ``***``."""
    if is_server(tracking_uri):
        return f"open {redact(tracking_uri)}"
    return f".venv/bin/mlflow ui --backend-store-uri {redact(tracking_uri)} --host 127.0.0.1 --port 5000"

"""Shared fixtures: compose the real configs, run jobs in-process or through the CLI, read MLflow.

Every test that writes to MLflow gets its own SQLite store under ``tmp_path``; nothing touches
the repo's ``mlruns/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share two cores (`make test`): one intra-op thread per job, not two per job
    # fighting over each core. A profile's hardware.num_threads still wins where a test sets it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipeline import CONF_DIR, REPO_ROOT
from pipeline.runtime import catalogue  # noqa: F401 - registers ${first_dev_metric:...} (optimized_metric's default)
from pipeline.runtime.launch import free_port

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never wait on the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The composed config exactly as ``python -m pipeline`` would see it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty SQLite MLflow store, its schema created and migrated, made once per test process."""
    import mlflow

    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def store(tmp_path: Path, request) -> dict[str, str]:
    """A SQLite MLflow store of its own (URI and artifact root) for one test: a copy of an empty,
    migrated one (MLflow's migration of a new store takes seconds), or, for a test marked
    ``new_store``, no file at all, as a first job into a new store finds it."""
    path = tmp_path / "mlflow.db"
    if request.node.get_closest_marker("new_store") is None:
        shutil.copyfile(request.getfixturevalue("migrated_store"), path)
    return {"uri": f"sqlite:///{path}", "artifact_root": str(tmp_path / "artifacts")}


@pytest.fixture
def store_overrides(store) -> list[str]:
    return [f"tracking.uri={store['uri']}", f"tracking.artifact_root={store['artifact_root']}"]


@pytest.fixture
def run_job(tmp_path: Path, store_overrides):
    """Run one job in-process on the composed config (plus the test store); return JobResult."""
    from pipeline.job import JobRequest
    from pipeline.job import run_job as _run_job

    counter = iter(range(1000))

    def _run(*overrides: str):
        all_overrides = [*overrides, *store_overrides]
        cfg = compose_config(all_overrides, hydra=True)
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        with_hydra = cfg
        cfg = OmegaConf.masked_copy(with_hydra, [k for k in with_hydra if k != "hydra"])
        return _run_job(cfg, tmp_path / f"job{next(counter)}", JobRequest(list(overrides), choices))

    return _run


@pytest.fixture
def cli(tmp_path: Path, store_overrides, request):
    """Run ``python -m <module> ...`` in a subprocess against the test store; with ``in_process=True``,
    the module's own entry point in this process instead (``python -m pipeline``: :func:`pipeline_in_process`;
    another: its ``main``), without a new interpreter importing torch, transformers and MLflow again."""

    def _cli(
        *args: str,
        module: str = "pipeline",
        with_store: bool = True,
        timeout: float = 300,
        env: dict | None = None,
        in_process: bool = False,
    ):
        extra = list(store_overrides) if with_store and module == "pipeline" else []
        command = [sys.executable, "-m", module, *args, *extra]
        if module == "pipeline":
            command.append(f"hydra.run.dir={tmp_path}/hydra")
        if in_process:
            assert not env, "in process: in this environment"
            capfd = request.getfixturevalue("capfd")
            if module == "pipeline":
                return pipeline_in_process(command[3:], capfd)
            return module_in_process(module, capfd, list(args))
        return subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    return _cli


def pipeline_in_process(args: list[str], capfd) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` through its own entry point (Hydra's ``main``, the one-line error
    reporting) in this process: a command refused before training, or a job or sweep (Hydra's basic
    launcher) whose process boundary is not what the test checks. The same exit status and output,
    without a new interpreter importing torch, transformers and MLflow again (seconds each). What the
    command changes in the process is put back: the arguments, the environment, the signal handlers,
    Hydra's global state, the working directory. An exception that escapes the command is a traceback
    on stderr and status 1, as the interpreter would make it."""
    import traceback

    from pipeline.__main__ import entry, main

    main.__wrapped__.__module__ = "__main__"  # as `python -m` runs it: Hydra finds conf/ beside its file
    code, trace = 0, ""
    try:
        with process_state_kept(["pipeline", *args]):
            entry()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught one
        code, trace = 1, traceback.format_exc()
    finally:
        main.__wrapped__.__module__ = "pipeline.__main__"
    out = capfd.readouterr()
    return subprocess.CompletedProcess(["pipeline", *args], code, out.out, out.err + trace)


@pytest.fixture
def mlflow_client(store):
    import mlflow

    mlflow.set_tracking_uri(store["uri"])
    return mlflow.MlflowClient(store["uri"])


def all_runs(client) -> list:
    """Every run in every experiment of the store."""
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments]) if experiments else []


@contextmanager
def mlflow_server(folder: Path, backend_uri: str, artifacts: Path | None = None, timeout: float = 120):
    """A real ``mlflow server`` on 127.0.0.1 on a free port; yields its URI, stops it on exit.

    Its log is ``folder/server.log``; with ``artifacts`` it serves artifacts from that folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri,
        "--workers",
        "1",
        *(["--artifacts-destination", str(artifacts)] if artifacts else []),
    ]
    uri = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}"
                        ) from None
                    time.sleep(0.5)
            yield uri
        finally:
            with suppress(ProcessLookupError):  # a server that died on start is already gone
                os.killpg(process.pid, signal.SIGTERM)
            try:  # uvicorn's graceful stop waits for its clients' idle connections: seconds a test need not wait
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory, migrated_store):
    """One ``mlflow server`` per test process (per xdist worker), SQLite backend (a copy of the migrated
    empty store: the server need not migrate one), served artifacts: ``{"uri", "folder"}``; its artifacts
    are under ``folder / "artifacts"``. Tests that use it write to an experiment of their own
    (``tracking.experiment_name``) and read only that experiment."""
    folder = tmp_path_factory.mktemp("tracking-server")
    shutil.copyfile(migrated_store, folder / "server.db")
    with mlflow_server(folder, f"sqlite:///{folder}/server.db", folder / "artifacts") as uri:
        yield {"uri": uri, "folder": folder}


def pytest_collection_modifyitems(config, items):
    unslow = [item.nodeid for item in items if "timed" in item.keywords and "slow" not in item.keywords]
    if unslow:  # `make test-fast` runs no timed phase: a timed test that is not slow would never run there
        raise pytest.UsageError(f"mark these timed tests slow as well: {', '.join(unslow)}")
    skip_data = pytest.mark.skip(reason=f"needs {SHARED_DATA}")
    for item in items:
        if "realdata" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip_data)
    if any("gpu" in item.keywords for item in items):
        import torch

        if not torch.cuda.is_available():
            skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
            for item in items:
                if "gpu" in item.keywords:
                    item.add_marker(skip_gpu)


def in_process(module: str, capsys, *args: str) -> tuple[int, str, str]:
    """``python -m pipeline.<module> ARGS`` in this process (its ``main``): (exit status, stdout, stderr)."""
    import importlib

    main = importlib.import_module(f"pipeline.{module}").main
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def module_in_process(module: str, capture, args: list[str]) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (a ``pipeline.`` module with a ``main``) in this process, as a completed
    process; what the command changes in the process is put back (:func:`process_state_kept`)."""
    with process_state_kept([module, *args]):
        code, out, err = in_process(module.removeprefix("pipeline."), capture, *args)
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], code, out, err)


@contextmanager
def process_state_kept(argv: list[str]):
    """Run a command's entry point here, then put back what it changes in the process: the arguments, the
    environment, the working directory, the signal handlers, the logging handlers, Hydra's global state,
    the garbage collector (an entry point that stopped before its job leaves it paused)."""
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.runtime import collector

    saved = (sys.argv, dict(os.environ), os.getcwd(), {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)})
    logs = _logging_state()
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])
        os.chdir(saved[2])
        for signum, handler in saved[3].items():
            signal.signal(signum, handler)
        GlobalHydra.instance().clear()
        collector.release()
        _restore_logging(logs)  # Hydra's job logging wrote to this test's captured streams


def _logging_state() -> dict:
    import logging

    loggers = [
        logging.getLogger(),
        *[v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)],
    ]
    return {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers}


def _restore_logging(state: dict) -> None:
    import logging

    for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(lg, logging.Logger):
            lg.handlers[:], lg.level, lg.propagate, lg.disabled = state.get(lg, ([], logging.NOTSET, True, False))


def logged_models(client, run) -> list:
    """The models (MLflow 3 LoggedModels) a run logged."""
    found = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    return list(found)


class Spawned(subprocess.Popen):
    """A command started in the background whose output (stdout and stderr together) goes to a log
    file, never to a pipe: a pipe nobody reads while the test waits fills up (64 KiB of progress
    lines) and blocks the command, which then never exits."""

    def __init__(self, command: list[str], log: Path, **kwargs) -> None:
        self.log = log
        with open(log, "w") as stream:
            super().__init__(command, stdout=stream, stderr=subprocess.STDOUT, text=True, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float) -> str:
        """The output once the command exits (``subprocess.TimeoutExpired`` after ``timeout`` s)."""
        self.wait(timeout=timeout)
        return self.output()

    def __exit__(self, *exc) -> None:
        """Leaving ``with``: a command still running (a test failed first) is killed, never left behind."""
        if self.poll() is None:
            self.kill()
        self.wait()


def spawn(command: list[str], log: Path, **kwargs) -> Spawned:
    """``command`` from the repo root, its output in ``log`` (see ``Spawned``)."""
    return Spawned(command, log, cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs)


def item_files(client, run, folder: str = "items") -> list[Path]:
    """A run's per-item files under ``folder``, downloaded."""
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=folder, tracking_uri=client.tracking_uri
        )
    )
    return sorted(local.glob("*.parquet"))


def logged_items(client, run, folder: str = "items") -> dict[str, tuple]:
    """A run's per-item files under ``folder``: ``{file name: (rows, {metric name: spec})}``."""
    from pipeline.tracking.items import read_file

    return {path.name: read_file(path) for path in item_files(client, run, folder)}


def check_items_reproduce(client, run, folder: str = "items", prefix: str = "") -> set[str]:
    """Each metric a run's items files (under ``folder``) describe, recomputed from the rows as comparisons
    read them (``pipeline.tracking.items``, ``intervals.value``), equals the run's logged ``prefix + name``
    to 1e-6; returns the metric names checked."""
    from pipeline.tracking import intervals, metric_key
    from pipeline.tracking.items import read

    checked = set()
    for path in item_files(client, run, folder):
        scored = read(path)
        assert scored, f"{folder}/{path.name} names no metric"
        for name, found in scored.items():
            logged = run.data.metrics[metric_key(prefix + name)]
            value = intervals.value(found.items)
            assert abs(value - logged) <= 1e-6, (f"{folder}/{path.name}", name, value, logged)
            checked.add(name)
    return checked

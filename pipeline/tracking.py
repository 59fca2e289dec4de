"""MLflow glue: the one run of a job, its params, tags, artifacts, metrics and model.

What a run holds (see CONTRACT.md):
- params: the composed config flattened with dot keys (``training.learning_rate``), logged once;
  secret-looking values redacted;
- tags: git commit and dirty flag, package versions, data fingerprint, world size, the experiment
  recipe, the command-line overrides, and on failure the reason;
- artifacts: ``config.yaml`` (resolved), ``overrides.yaml``, ``git.patch`` when the tree is dirty,
  ``model_card.md``, evaluator CSVs under ``eval/``, the model (``model/``, sentence_transformers
  flavour), ``error/traceback.txt`` on failure;
- metrics: training loss / learning rate / grad norm per logging step, evaluator metrics.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import traceback
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import CONF_DIR, REPO_ROOT, PipelineError

log = logging.getLogger(__name__)

PACKAGES = ("torch", "sentence-transformers", "transformers", "accelerate", "datasets", "mlflow", "hydra-core", "pandas")
# A key (or its last dot part) that holds a secret: api_token, hf_token, password, secret_key, ...;
# whole words between _ . - so that e.g. ``tokenizer`` is not one.
SECRET_KEY = re.compile(r"(^|[_.-])(token|password|passwd|secret|api[_-]?key|credentials?|auth)([_.-]|$)", re.IGNORECASE)
URI_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
MAX_PARAM_LENGTH = 6000


# ----------------------------------------------------------------------------------------------
# Target and experiment
# ----------------------------------------------------------------------------------------------


def redact(value: str) -> str:
    """Strip ``user:password@`` from URIs in a string."""
    return URI_CREDENTIALS.sub("***@", value)


def check_target(tracking: DictConfig, timeout: float = 5.0) -> None:
    """Fail fast (seconds) when the tracking store cannot be used, before any model loads."""
    uri = str(tracking.uri)
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        probe = urllib.request.Request(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl().rstrip("/") + "/health")
        if parts.username:  # credentials in the URI: sent as basic auth, never as part of the URL
            login = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            probe.add_header("Authorization", f"Basic {login}")
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
        path = Path(uri[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PipelineError(f"tracking.uri={uri!r}: cannot create {path.parent} ({error.strerror}): pick a writable path.") from None
        if path.exists() and not path.is_file():
            raise PipelineError(f"tracking.uri={uri!r}: {path} is not a file: point tracking.uri at a .db file.")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the default store of ``conf/tracking/sqlite.yaml``: where
    the commands that take ``--tracking-uri`` look without one."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return str(OmegaConf.load(CONF_DIR / "tracking" / "sqlite.yaml").uri)


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
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not str(tracking.uri).startswith(("http://", "https://")) and tracking.get("artifact_root"):
        folder = Path(str(tracking.artifact_root)) / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = folder.resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a parallel job
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# ----------------------------------------------------------------------------------------------
# What a run records
# ----------------------------------------------------------------------------------------------


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {dot.key: string}; secret-looking keys and URI credentials redacted."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if _hidden(key.rsplit(".", 1)[-1], node):
        text = "***"
    elif isinstance(node, (list, tuple)):
        text = json.dumps(node)
    else:
        text = str(node)
    out[key] = redact(text)[:MAX_PARAM_LENGTH]
    return out


def config_params(cfg: DictConfig) -> dict[str, str]:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return flatten(container)


def git_state() -> dict[str, str]:
    """Commit, dirty flag and the uncommitted patch of the project's checkout (empty outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=no").strip()
        patch = git("diff", "HEAD") if status else ""
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": str(bool(status)).lower(), "patch": patch}


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def secret_values(cfg: DictConfig) -> list[str]:
    """Values of secret-looking config keys: scrubbed from every text artifact."""
    container = OmegaConf.to_container(cfg, resolve=True)
    found: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif SECRET_KEY.search(key) and isinstance(node, (str, int, float)) and not isinstance(node, bool):
            if len(str(node)) >= 4:  # shorter values cannot be told apart from other text
                found.append(str(node))

    walk(container)
    return found


def _redacted(node: Any, key: str = "") -> Any:
    """The config with secret-looking values replaced by ``***`` (still valid YAML when dumped)."""
    if isinstance(node, dict):
        return {k: _redacted(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_redacted(v, key) for v in node]
    if _hidden(key, node):
        return "***"
    return redact(node) if isinstance(node, str) else node


def _hidden(key: str, value: Any) -> bool:
    """A value under a secret-looking key (``api_key``, ``*_token``, ...) that is set: never logged."""
    return bool(SECRET_KEY.search(key)) and value not in (None, "", False)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return redact(text)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@contextmanager
def job_run(
    cfg: DictConfig, experiment_id: str, run_name: str, overrides: list[str], tags: dict[str, str], run_id: str | None = None
) -> Iterator[Any]:
    """Start the job's MLflow run, log its config, and end it FINISHED, FAILED or KILLED.

    Nothing leaves a run RUNNING: an exception ends it FAILED with the reason as the
    ``failure_reason`` tag and the traceback as an artifact; Ctrl-C/SIGTERM ends it KILLED.
    ``run_id`` continues an existing run (``pipeline.resume``) instead of starting a new one.
    """
    import mlflow

    secrets = secret_values(cfg)
    git = git_state()
    all_tags = {
        **{f"version.{name}": version for name, version in package_versions().items()},
        "pipeline.overrides": scrub(" ".join(overrides), secrets)[:5000],
        **tags,
    }
    if git:
        all_tags.update({"git.commit": git["commit"], "git.dirty": git["dirty"]})
    if run_id:
        run = mlflow.start_run(run_id=run_id, tags=all_tags)
        if "failure_reason" in run.data.tags:  # from the interruption being resumed
            mlflow.MlflowClient().delete_tag(run_id, "failure_reason")
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=scrub(run_name, secrets), tags=all_tags)
    try:
        mlflow.log_params(config_params(cfg))
        mlflow.log_text(scrub(OmegaConf.to_yaml(_redacted(OmegaConf.to_container(cfg, resolve=True))), secrets), "config.yaml")
        mlflow.log_text(scrub(OmegaConf.to_yaml(OmegaConf.create(list(overrides))), secrets), "overrides.yaml")
        if git.get("patch"):
            mlflow.log_text(git["patch"], "git.patch")
        yield run
    except KeyboardInterrupt as error:
        _end(mlflow, "KILLED", f"interrupted (Ctrl-C or SIGTERM){f': {error}' if str(error) else ''}", None, secrets)
        raise
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        _end(mlflow, "FAILED", reason, traceback.format_exc(), secrets)
        raise
    else:
        mlflow.flush_async_logging()
        mlflow.end_run("FINISHED")


def _end(mlflow, status: str, reason: str, trace: str | None, secrets: list[str]) -> None:
    try:
        mlflow.flush_async_logging()
        mlflow.set_tag("failure_reason", scrub(reason, secrets)[:5000])
        if trace:
            mlflow.log_text(scrub(trace, secrets), "error/traceback.txt")
    finally:
        mlflow.end_run(status)


def log_data_lineage(data, name: str, eval_name: str) -> None:
    """Every split read, logged in one ``mlflow.log_inputs`` (training / evaluation context); several
    train sets each under its own name (``NAME-train``)."""
    import mlflow

    splits = [("training", f"{name}-train" if set_name == "train" else f"{set_name}-train", split)
              for set_name, split in data.train_splits.items()]
    splits += [("evaluation", f"{eval_name}-{split_name}", split) for split_name, split in data.eval_splits.items()]
    datasets = []
    for _, dataset_name, split in splits:
        with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
            warnings.simplefilter("ignore", UserWarning)
            datasets.append(mlflow.data.from_pandas(
                split.dataset.to_pandas(),
                source=_lineage_source(split.source),
                name=dataset_name,
            ))
    contexts = [context for context, _, _ in splits]
    if not datasets:
        return
    for attempt in range(LINEAGE_ATTEMPTS):
        try:
            mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets))
            return
        except mlflow.exceptions.MlflowException as error:
            # A dataset is stored once per experiment (name, digest). Jobs of one sweep that log the same
            # data at the same moment race to insert it; the loser's transaction is rolled back whole,
            # and the retry finds the winner's row and links to it.
            if not _DUPLICATE_ROW.search(str(error)) or attempt == LINEAGE_ATTEMPTS - 1:
                raise
            log.info("dataset lineage: %s was stored by a concurrent job; linking to it", contexts)


LINEAGE_ATTEMPTS = 5
# How SQLite, PostgreSQL and MySQL stores (directly or through a tracking server) report a duplicate row.
_DUPLICATE_ROW = re.compile(r"IntegrityError|UniqueViolation|unique constraint|Duplicate entry", re.IGNORECASE)


def _lineage_source(source: str) -> str:
    return source if "://" in source or not Path(source).exists() else Path(source).resolve().as_uri()


def metrics_callback():
    """A TrainerCallback that logs every trainer log (loss, lr, grad norm, eval_*) to the active run."""
    import mlflow
    from transformers import TrainerCallback

    class MLflowMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            values = {key: float(value) for key, value in logs.items() if isinstance(value, (int, float))}
            if values:
                mlflow.log_metrics(values, step=state.global_step, synchronous=False)

    return MLflowMetrics()


def log_model(model, folder: Path) -> None:
    """Save the model, log its generated card as ``model_card.md`` and the model as ``model/``."""
    import mlflow

    model.save(str(folder))
    card = folder / "README.md"
    if card.exists():
        mlflow.log_text(card.read_text(encoding="utf-8"), "model_card.md")
    requirements = [f"{name}=={version}" for name, version in package_versions().items() if name in ("sentence-transformers", "torch", "transformers")]
    mlflow.sentence_transformers.log_model(model, name="model", pip_requirements=requirements)


def logged_config(client, run_id: str, overrides: list[str]) -> DictConfig:
    """The run's logged ``config.yaml`` with ``overrides`` merged in (unknown keys are an error).

    What ``pipeline.rerun`` and ``pipeline.resume`` rebuild a job from: never today's defaults.
    """
    try:
        text = _artifact_text(client, run_id, "config.yaml")
    except LookupError as error:
        raise PipelineError(f"run {run_id} has no config.yaml artifact ({error}): only runs logged by `python -m pipeline` can be replayed.") from None
    try:
        cfg = OmegaConf.create(text)
    except Exception as error:  # noqa: BLE001 - yaml's errors share no base class worth naming
        raise PipelineError(f"config.yaml of run {run_id} does not parse ({type(error).__name__}): a redacted secret (***) cannot be replayed; fix the artifact or rerun by hand.") from None
    OmegaConf.set_struct(cfg, True)
    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~"))]
    if bad:
        raise PipelineError(f"override {bad[0]!r}: write key=value with a key of the logged config (e.g. training.learning_rate=1e-4).")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise PipelineError(f"override does not fit the logged config: {error.msg if hasattr(error, 'msg') else error}: use keys that config.yaml of run {run_id} has.") from None


def logged_list(client, run_id: str, name: str) -> list[str]:
    """A YAML list artifact of the run (the command-line overrides), empty when absent."""
    try:
        return [str(item) for item in OmegaConf.create(_artifact_text(client, run_id, name))]
    except LookupError:
        return []


def _artifact_text(client, run_id: str, name: str) -> str:
    """A text artifact of the run, read through a temporary download; LookupError when absent."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="pipeline-logged-") as folder:
        try:
            return Path(client.download_artifacts(run_id, name, folder)).read_text(encoding="utf-8")
        except (MlflowException, OSError) as error:
            raise LookupError(str(error)) from None


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {redact(tracking_uri)}"
    return f".venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"

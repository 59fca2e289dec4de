"""What a run records besides its status: params, replay tags, dataset lineage, metrics, the model.

- params: the composed config flattened with dot keys (``training.learning_rate``), secrets hidden;
- tags: git commit and dirty flag, package versions (what ``pipeline.rerun`` compares);
- artifacts: ``git.patch`` (uncommitted changes), ``model_card.md``, evaluator files under ``eval/``;
- inputs: every split read, with its source and digest (``mlflow.log_inputs``); a mined train set;
- metrics: whatever the stages hand to :func:`log_metrics`; the leakage audit's, with its matches under ``leakage/``;
- the model: an MLflow 3 LoggedModel in the ``sentence_transformers`` flavour.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import REPO_ROOT
from pipeline.tracking.scrub import HIDDEN, MAX_PARAM_LENGTH, MAX_TAG_LENGTH, is_secret, metric_key, scrub

log = logging.getLogger(__name__)

PACKAGES = (
    "torch",
    "sentence-transformers",
    "transformers",
    "accelerate",
    "datasets",
    "mlflow",
    "hydra-core",
    "pandas",
)
INPUT_ATTEMPTS = 5  # a dataset input logged while other jobs store the same dataset (_log_inputs)
# How SQLite, PostgreSQL and MySQL stores (directly or through a tracking server) report a duplicate row.
_DUPLICATE_ROW = re.compile(r"IntegrityError|UniqueViolation|unique constraint|Duplicate entry", re.IGNORECASE)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {dot.key: string}; secret-looking keys and URI credentials redacted."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if is_secret(key.rsplit(".", 1)[-1], node):
        text = HIDDEN
    elif isinstance(node, (list, tuple)):
        text = json.dumps(node)
    else:
        text = str(node)
    out[key] = scrub(text, limit=MAX_PARAM_LENGTH)
    return out


def config_params(cfg: DictConfig) -> dict[str, str]:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return flatten(container)


def git_state() -> dict[str, str]:
    """Commit, dirty flag and the uncommitted patch of the project's checkout (empty outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout

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


def active_run():
    """MLflow's active run, or None. A process that never imported MLflow has none (a rank other than 0,
    which owns no run): it is not imported only to say so (about a second of a rank's start-up)."""
    if "mlflow" not in sys.modules:
        return None
    import mlflow

    return mlflow.active_run()


def log_metrics(values: dict[str, float], step: int | None = None, synchronous: bool = True) -> None:
    """Metrics into the active run (no-op without one: ranks other than 0 own no run), under the names
    MLflow accepts (``@`` -> ``_at_``: :func:`pipeline.tracking.scrub.metric_key`)."""
    if values and active_run() is not None:
        import mlflow

        named = {metric_key(name): value for name, value in values.items()}
        mlflow.log_metrics(named, step=step, synchronous=synchronous)


def set_tags(tags: dict[str, str]) -> None:
    """Tags on the active run (no-op without one), scrubbed."""
    if active_run() is not None:
        import mlflow

        mlflow.set_tags({key: scrub(str(value), limit=MAX_TAG_LENGTH) for key, value in tags.items()})


def log_files(paths: list[Path], folder: str) -> None:
    """Files as artifacts of the active run under ``folder``."""
    import mlflow

    for path in paths:
        mlflow.log_artifact(str(path), folder)


def log_leakage(metrics: dict[str, float], matches: dict[str, Any]) -> None:
    """The leakage audit (``pipeline.stages.leakage``): its metrics, and each evaluation split's matches
    (pandas frames) as ``leakage/<split>.parquet``."""
    if active_run() is None:
        return
    import mlflow

    log_metrics(metrics)
    with tempfile.TemporaryDirectory() as folder:
        for split, frame in matches.items():
            frame.to_parquet(Path(folder) / f"{split}.parquet", index=False)
        mlflow.log_artifacts(folder, "leakage")


def flush() -> None:
    """Write the metrics MLflow still buffers (asynchronous logging) to the active run."""
    if active_run() is not None:
        import mlflow

        mlflow.flush_async_logging()


def log_data_lineage(data, name: str, eval_name: str) -> None:
    """Every split read, logged in one ``mlflow.log_inputs`` (training / evaluation context); several
    train sets each under its own name (``NAME-train``)."""
    import mlflow

    splits = [
        ("training", f"{name}-train" if set_name == "train" else f"{set_name}-train", split)
        for set_name, split in data.train_splits.items()
    ]
    splits += [("evaluation", f"{eval_name}-{split_name}", split) for split_name, split in data.eval_splits.items()]
    datasets = []
    for _, dataset_name, split in splits:
        with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
            warnings.simplefilter("ignore", UserWarning)
            # from the Arrow rows as they are: MLflow reads the first 10,000 rows for the schema, never the
            # whole split (its pandas dataset infers the schema from every row: minutes at 10M rows)
            datasets.append(
                mlflow.data.from_huggingface(
                    split.dataset,
                    source=_lineage_source(split.source),
                    name=dataset_name,
                    digest=_lineage_digest(split),
                )
            )
    contexts = [context for context, _, _ in splits]
    if datasets:
        _log_inputs(datasets, contexts, [None] * len(datasets))


def log_mined_set(dataset, folder: str, name: str, cached: bool) -> None:
    """The mine stage's output as a training dataset input (name, digest, its cache folder as source),
    and tags ``mine.cache`` (hit / miss) and ``mine.folder``."""
    if active_run() is None:
        return
    import mlflow

    with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        mined = mlflow.data.from_pandas(dataset.to_pandas(), source=_lineage_source(folder), name=name)
    _log_inputs([mined], ["training"], [{"pipeline.mined": "true"}])
    mlflow.set_tags({"mine.cache": "hit" if cached else "miss", "mine.folder": folder})


def _log_inputs(datasets: list, contexts: list[str], tags: list[dict[str, str] | None]) -> None:
    """``mlflow.log_inputs`` into the active run, again (up to :data:`INPUT_ATTEMPTS` times) where a
    concurrent job stored the same dataset first.

    A dataset is stored once per experiment (name, digest): MLflow's SQL store looks it up, then inserts
    it. Jobs that log the same data at the same moment (a parallel sweep's train set, two jobs mining one
    key) can both miss it; the loser's insert breaks the unique key and its transaction is rolled back
    whole, so the next attempt finds the winner's row and links to it."""
    import mlflow

    for attempt in range(INPUT_ATTEMPTS):
        try:
            mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=tags)
            return
        except mlflow.exceptions.MlflowException as error:
            if not _DUPLICATE_ROW.search(str(error)) or attempt == INPUT_ATTEMPTS - 1:
                raise
            log.info("dataset inputs: %s stored by a concurrent job; linking to it", [d.name for d in datasets])


def _lineage_digest(split) -> str:
    """The rows as read: the source's content fingerprint, what was done to them (the ``datasets``
    fingerprint of the column selection, renames, transform, row limit) and their number."""
    parts = f"{split.fingerprint}:{split.dataset._fingerprint}:{split.dataset.num_rows}"
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def _lineage_source(source: str) -> str:
    return source if "://" in source or not Path(source).exists() else Path(source).resolve().as_uri()


def log_model(model) -> str:
    """Log the model (``model/``, saved once, by MLflow) and its generated card as ``model_card.md``;
    returns its ``models:/<model_id>`` URI."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.sentence_transformers import SENTENCE_TRANSFORMERS_DATA_PATH

    pinned = ("sentence-transformers", "torch", "transformers")
    requirements = [f"{name}=={version}" for name, version in package_versions().items() if name in pinned]
    info = mlflow.sentence_transformers.log_model(model, name="model", pip_requirements=requirements)
    location = mlflow.get_logged_model(info.model_id).artifact_location
    with tempfile.TemporaryDirectory(prefix="pipeline-card-") as folder:
        try:  # the card sentence-transformers wrote when MLflow saved the model
            card = mlflow.artifacts.download_artifacts(
                f"{location}/{SENTENCE_TRANSFORMERS_DATA_PATH}/README.md", dst_path=folder
            )
            mlflow.log_text(scrub(Path(card).read_text(encoding="utf-8")), "model_card.md")
        except (MlflowException, OSError) as error:
            log.warning("The model card could not be read back from the logged model (%s)", error)
    return info.model_uri

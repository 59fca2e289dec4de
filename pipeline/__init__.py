"""Training pipeline for sentence-embedding models: Hydra config -> load -> train -> evaluate -> MLflow.

Importing this package is cheap (no torch): it registers the ``${repo_root:}`` resolver that the
configs use to find the bundled data and the default MLflow store wherever the command runs from
(and ``${pid:}``, which keeps each command's output folder its own, and ``${threads_per_job:N}``).
``${first_dev_metric:...}`` needs an evaluator class's facts: ``pipeline.runtime.catalogue`` registers it, and
every command that composes a job imports it.
"""

import os
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"

OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
# ``${pid:}``: this process's id (hydra.run.dir: commands started in the same second get their own folder).
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


def _artifacts_beside(uri: str) -> str | None:
    """``sqlite:////data/mlflow.db`` -> ``/data/artifacts``: a SQLite store keeps its artifacts beside
    its database, so it moves or goes as one folder; other stores: None (the server decides)."""
    if not str(uri).startswith("sqlite:///"):
        return None
    return str(Path(str(uri)[len("sqlite:///") :]).parent / "artifacts")


OmegaConf.register_new_resolver("artifacts_beside", _artifacts_beside, replace=True)
# ``${metric:sts,dev,spearman_cosine}`` -> ``sts-dev_spearman_cosine``; null without a primary metric
# (no evaluator). conf/config.yaml's default before first_dev_metric: job folders written then resume with it.
OmegaConf.register_new_resolver(
    "metric", lambda name, split, primary: f"{name}-{split}_{primary}" if primary else None, replace=True
)


def threads_per_job(jobs, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` jobs running at once on this machine (``sweep=parallel``): the
    cores this process may use, split evenly, at least 1 each (2 cores, 2 jobs: 1 each; 16 cores: 8 each).
    ``jobs`` <= 0 counts as joblib's ``n_jobs`` does (-1: one job per core)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = int(jobs)
    running = jobs if jobs > 0 else max(1, cores + 1 + jobs)
    return max(1, cores // running)


# ``${threads_per_job:N}``: resolved where the job runs, so each machine splits its own cores.
OmegaConf.register_new_resolver("threads_per_job", threads_per_job, replace=True)


class PipelineError(ValueError):
    """A user mistake (config, data, tracking target): reported as one message, no traceback."""

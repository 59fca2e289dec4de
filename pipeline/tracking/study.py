"""The Optuna study behind an Optuna sweep: where it is stored, its name, its link to MLflow, its plots.

A study is kept in a persistent Optuna storage so that re-running the same sweep continues it:
``hydra.sweeper.storage`` (default: ``optuna.db`` beside a SQLite MLflow store, else
``<repo>/mlruns/optuna.db``) under ``hydra.sweeper.study_name`` (default: the experiment's name and a
digest of the search space, the direction and the command's overrides). The study's user attribute
``mlflow_parent_run_id`` holds the MLflow parent run of the sweep that last ran it, so the next
sweep's parent can link back (``optuna.previous_parent``). Nothing here calls MLflow:
``pipeline.tracking.sweep`` tags the parent and logs the plots drawn by :func:`write_plots`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import REPO_ROOT, PipelineError
from pipeline.tracking.scrub import scrub

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
SQLITE = "sqlite:///"


@dataclass(frozen=True)
class StudySettings:
    storage: str  # an Optuna storage URL (RDB or journal)
    name: str


def settings(config: DictConfig) -> StudySettings:
    """The storage and study name of a sweep's full config (with its ``hydra`` node)."""
    sweeper = config.hydra.sweeper
    storage = sweeper.get("storage") or default_storage(str(config.tracking.uri))
    return StudySettings(str(storage), str(sweeper.get("study_name") or default_name(config)))


def default_storage(tracking_uri: str) -> str:
    """``optuna.db`` in the folder of a SQLite MLflow store's database, else in ``<repo>/mlruns``."""
    path = tracking_uri.removeprefix(SQLITE).split("?", 1)[0] if tracking_uri.startswith(SQLITE) else ""
    folder = Path(path).parent if path and path != ":memory:" else REPO_ROOT / "mlruns"
    return f"{SQLITE}{folder.absolute() / 'optuna.db'}"


def default_name(config: DictConfig) -> str:
    """``<experiment>-<digest>``: the same sweep command (search space, direction, task overrides) gives
    the same name, so running it again continues its study; ``hydra.*`` overrides (``n_trials``) do not count."""
    sweeper = config.hydra.sweeper
    params = OmegaConf.to_container(sweeper.get("params") or OmegaConf.create({}), resolve=False)
    space = sorted(f"{key}={value}" for key, value in params.items())
    overrides = sorted(str(o) for o in config.hydra.overrides.task)
    text = "\n".join([f"direction={sweeper.get('direction')}", *space, *overrides])
    return f"{config.tracking.experiment_name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def check_study_storage(url: str) -> None:
    """Open the Optuna storage ``hydra.sweeper.storage`` names, before any job: one line when it cannot.
    A SQLite file's folder is created."""
    import optuna

    if url.startswith(SQLITE) and url != SQLITE + ":memory:":
        Path(url.removeprefix(SQLITE).split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
    try:
        optuna.storages.get_storage(url)
    except Exception as error:  # noqa: BLE001 - any failure to open it is the user's to fix
        reason = " ".join(f"{type(error).__name__}: {error}".split()).rstrip(":")[:300]
        raise PipelineError(
            f"hydra.sweeper.storage={scrub(url)!r} cannot be opened ({scrub(reason)}): "
            "fix the URL, or leave it null (optuna.db beside the MLflow store)."
        ) from None


def previous_parent(study: StudySettings, direction: str) -> str | None:
    """Create the study or load it (refused when it was run in the other direction); the MLflow parent
    run it recorded last (None for a new study)."""
    import optuna

    loaded = optuna.create_study(study_name=study.name, storage=study.storage, direction=direction, load_if_exists=True)
    if loaded.direction.name.lower() != direction:
        raise PipelineError(
            f"Optuna study {study.name!r} in {scrub(study.storage)} was run to {loaded.direction.name.lower()}, "
            f"not {direction}: set hydra.sweeper.study_name to a new name, or the direction back."
        )
    return loaded.user_attrs.get(PARENT_ATTR)


def record_parent(study: StudySettings, parent_run_id: str) -> None:
    """Keep ``parent_run_id`` in the study: the next sweep that runs it links its parent to this one."""
    import optuna

    optuna.load_study(study_name=study.name, storage=study.storage).set_user_attr(PARENT_ATTR, parent_run_id)


def write_plots(study: StudySettings, folder: Path) -> list[Path]:
    """``optimization_history.png`` (every trial of the study, all sweeps that ran it) and, given two
    completed trials and a parameter that varied, ``param_importances.png``, in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    loaded = optuna.load_study(study_name=study.name, storage=study.storage)
    done = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return []
    drawn = [("optimization_history.png", plots.plot_optimization_history)]
    varying = {key for trial in done for key in trial.params if len({str(t.params.get(key)) for t in done}) > 1}
    if len(done) >= 2 and varying:
        drawn.append(("param_importances.png", plots.plot_param_importances))
    written = []
    for name, draw in drawn:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = draw(loaded)
            except (RuntimeError, ValueError) as error:  # e.g. importances of a degenerate study
                log.warning("Optuna's %s was not drawn: %s", name, error)
                continue
        axes.figure.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(folder / name)
    return written

"""The Optuna study behind an Optuna sweep: where it is stored, its name, its link to MLflow, its plots.

A study is kept in a persistent Optuna storage so that re-running the same sweep continues it:
``hydra.sweeper.storage`` (default: ``optuna.db`` beside a SQLite MLflow store, else
``<repo>/mlruns/optuna.db``) under ``hydra.sweeper.study_name`` (default: the experiment's name and a
digest of the search space, the direction and the command's overrides). A sweep keeps a heartbeat for
each trial it runs (``hydra.sweeper.heartbeat_interval``); the next sweep on the storage fails the trials
whose heartbeat stopped (a process killed or preempted) instead of leaving them RUNNING. The study's user attribute
``mlflow_parent_run_id`` holds the MLflow parent run of the sweep that last ran it, so the next
sweep's parent can link back (``optuna.previous_parent``). Nothing here calls MLflow:
``pipeline.tracking.sweep`` tags the parent and logs the plots drawn by :func:`write_plots`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import REPO_ROOT, PipelineError
from pipeline.tracking.direction import metric_direction
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
    direction = sweeper.get("direction") or metric_direction(str(config.get("optimized_metric") or ""))
    text = "\n".join([f"direction={direction}", *space, *overrides])
    return f"{config.tracking.experiment_name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def check_search_space(params: dict, overrides: list[str]) -> None:
    """A key both in ``hydra.sweeper.params`` and on the command line is refused (the trial would get
    it twice, and Optuna would record a value that never ran), and so is a ``params`` key that Hydra
    split at its dots into a mapping (``+hydra.sweeper.params.training.learning_rate=...``)."""
    searched = {str(key).lstrip("+~"): value for key, value in params.items()}
    for key, value in searched.items():
        if isinstance(value, Mapping):
            inner = next(iter(value), "KEY")
            raise PipelineError(
                f"hydra.sweeper.params.{key} is a mapping, not a search space ({key}.{inner} was split at its dots): "
                f"write the key whole, e.g. '++hydra.sweeper.params={{{key}.{inner}:\"interval(a, b)\"}}'."
            )
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in searched:
            raise PipelineError(
                f"{key} is both in hydra.sweeper.params ({searched[key]}) and on the command line ({override}): "
                f"drop {override} to let Optuna search it, or take {key} out of hydra.sweeper.params to fix it."
            )


def check_heartbeat(heartbeat_interval: int | None, grace_period: int | None) -> None:
    """A trial is failed as stale ``grace_period`` seconds after its last heartbeat: shorter than the
    interval, live trials of a running sweep would be failed. Without a heartbeat, a grace period would be ignored."""
    if heartbeat_interval is None:
        if grace_period is not None:
            raise PipelineError(
                f"hydra.sweeper.grace_period={grace_period} needs a heartbeat, and heartbeat_interval is null: "
                "set hydra.sweeper.heartbeat_interval (seconds), or grace_period back to null."
            )
        return
    if int(heartbeat_interval) <= 0 or (grace_period is not None and int(grace_period) <= int(heartbeat_interval)):
        raise PipelineError(
            f"hydra.sweeper.heartbeat_interval={heartbeat_interval}, grace_period={grace_period}: the interval must be "
            "a positive number of seconds and grace_period longer than it (null: twice the interval)."
        )


def open_storage(url: str, heartbeat_interval: int | None, grace_period: int | None):
    """The Optuna storage at ``url``, recording a heartbeat every ``heartbeat_interval`` seconds for the
    trials a sweep runs (None: no heartbeat, stale trials are never failed)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=None if heartbeat_interval is None else int(heartbeat_interval),
            grace_period=None if grace_period is None else int(grace_period),
        )


def fail_stale_trials(study) -> list[int]:
    """Fail the study's RUNNING trials whose heartbeat stopped (Optuna's ``fail_stale_trials``); their
    numbers. A trial without a heartbeat (a storage written without one) stays RUNNING."""
    import optuna
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = sorted(
        t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running
    )
    if failed:
        log.warning(
            "Optuna study %r: trial(s) %s were RUNNING with no heartbeat for longer than the grace period "
            "(their process was killed or preempted): marked FAIL",
            study.study_name,
            failed,
        )
    return failed


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

"""A Hydra sweeper on Optuna's ask/tell API, whose study persists and resumes.

``hydra/sweeper=optuna_study`` (``conf/hydra/sweeper/optuna_study.yaml``; Hydra finds the class through
``hydra_plugins/pipeline_optuna_sweeper``). The config surface is hydra-optuna-sweeper's:
``params`` in Hydra's sweep grammar, ``direction``, ``n_trials``, ``n_jobs``, ``max_failure_rate``,
``sampler`` (a ``_target_`` at an Optuna sampler class), ``storage``, ``study_name``. What differs:

- ``direction`` null (the default) is taken from ``optimized_metric`` (``pipeline.tracking.direction``);
- the study lives in a persistent Optuna storage (``pipeline.tracking.study``: SQLite beside the MLflow
  store by default) and running the same sweep again continues it;
- ``n_trials`` is the number of trials this run adds to the study;
- a seeded sampler proposes trial N with ``seed + N``, N being the number the storage gives the trial
  when it is asked: a resumed study does not propose its first trials again, two sweeps running on one
  storage at once propose different trials, and a seeded sweep proposes the same trials every time;
- each running trial records a heartbeat (``heartbeat_interval``, ``grace_period``); a sweep starts by
  failing the trials whose heartbeat stopped (their process was killed).

Each batch of ``n_jobs`` trials is asked from the study, launched as one batch of Hydra jobs through
the configured launcher, and told the value each job returned (None or an error: the trial FAILED).
Writes ``optimization_results.yaml`` (best params and value of the whole study) in the sweep folder.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import ExitStack
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from pipeline.runtime import catalogue  # noqa: F401 - registers ${first_dev_metric:...}: the direction reads the metric

log = logging.getLogger(__name__)


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override (``interval``, ``tag(log, interval)``, ``choice``,
    ``range``), or None for a fixed value: the mapping hydra-optuna-sweeper uses, on Optuna's
    ``FloatDistribution`` / ``IntDistribution`` / ``CategoricalDistribution``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            # range's stop is exclusive; Optuna's high is inclusive
            return FloatDistribution(value.start, value.stop - value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - int(value.step), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: Optuna takes interval(), tag(log, interval()), choice() or range()")


def suggest(trial, name: str, found: Any) -> Any:
    """Suggest ``name`` from the distribution ``found`` through the trial's public ``suggest_*`` API."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(found, FloatDistribution):
        return trial.suggest_float(name, found.low, found.high, step=found.step, log=found.log)
    if isinstance(found, IntDistribution):
        return trial.suggest_int(name, found.low, found.high, step=found.step, log=found.log)
    if isinstance(found, CategoricalDistribution):
        return trial.suggest_categorical(name, found.choices)
    raise TypeError(f"{name}: no Optuna suggest method for {found!r}")


def search_space(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(Optuna distributions by override key, the fixed overrides every trial repeats)."""
    space, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(overrides):
        found = distribution(override)
        if found is None:
            fixed.append(override.input_line)
        else:
            space[override.get_key_element()] = found
    return space, fixed


class OptunaSweeper(Sweeper):
    """Hydra's sweeper interface over an Optuna study: ask a batch, launch it, tell the results."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: str | None,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        heartbeat_interval: int | None,
        grace_period: int | None,
    ) -> None:
        self.sampler = sampler
        self.direction = None if direction is None else str(direction)
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        self.params = params or {}
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from pipeline.tracking.direction import sweep_direction
        from pipeline.tracking.study import check_search_space, fail_stale_trials, open_storage, settings

        check_search_space(dict(self.params), list(arguments))
        space, fixed = search_space([f"{key}={value}" for key, value in self.params.items()] + list(arguments))
        where = settings(self.config)
        storage = open_storage(where.storage, self.heartbeat_interval, self.grace_period)
        direction = sweep_direction(self.direction, self.config.get("optimized_metric"))
        study = optuna.create_study(
            study_name=where.name, storage=storage, direction=direction, sampler=self._sampler(0), load_if_exists=True
        )
        fail_stale_trials(study)
        log.info(
            "Optuna study %r (%d trials so far), %d more, to %s %s; sampler %s",
            where.name,
            len(study.trials),
            self.n_trials,
            direction,
            self.config.get("optimized_metric"),
            type(study.sampler).__name__,
        )
        to_go = self.n_trials
        while to_go > 0:
            with ExitStack() as heartbeats:
                batch = [self._ask(study, space, heartbeats) for _ in range(min(self.n_jobs, to_go))]
                failed = self._run_batch(study, batch, fixed)
            to_go -= len(batch)
            if failed / len(batch) > self.max_failure_rate:
                log.error(
                    "%d of %d trials failed, over hydra.sweeper.max_failure_rate=%s: the study stops here",
                    failed,
                    len(batch),
                    self.max_failure_rate,
                )
                break
        self._save_results(study)

    def _ask(self, study, space: dict[str, Any], heartbeats: ExitStack) -> Any:
        """A new trial with its parameters suggested, its heartbeat recorded until ``heartbeats`` closes.

        The trial is asked first, without parameters: the storage gives it its number atomically, so
        processes sharing the study never get the same one. A seeded sampler is then replaced by one
        seeded with ``seed + number`` before any parameter is suggested (Optuna samples when a parameter
        is suggested, through ``study.sampler``; ``ask`` alone only runs the sampler's ``before_trial``).
        """
        from optuna.storages._heartbeat import get_heartbeat_thread

        with warnings.catch_warnings():  # the heartbeat is meant for Study.optimize; this loop keeps it itself
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = study.ask()
        heartbeats.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
        if self.sampler.get("seed") is not None:
            study.sampler = self._sampler(trial.number)
        for name, found in space.items():
            suggest(trial, name, found)
        return trial

    def _sampler(self, trial_number: int) -> Any:
        """The configured sampler, its seed (if any) offset by ``trial_number``."""
        from hydra.utils import instantiate

        sampler = OmegaConf.to_container(self.sampler, resolve=True)
        if sampler.get("seed") is not None:
            sampler["seed"] = int(sampler["seed"]) + trial_number
        return instantiate(sampler)

    def _run_batch(self, study, batch: list, fixed: list[str]) -> int:
        """Launch one batch of trials as Hydra jobs and tell the study their values; the number failed."""
        from optuna.trial import TrialState

        overrides = [[*(f"{key}={value}" for key, value in trial.params.items()), *fixed] for trial in batch]
        try:
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except BaseException:  # interrupted or crashed: the asked trials did not run
            for trial in batch:
                study.tell(trial, state=TrialState.FAIL)
            raise
        self.job_idx += len(returns)
        failed = 0
        for trial, ret in zip(batch, returns):
            value = ret.return_value if ret.status.name == "COMPLETED" else None
            if isinstance(value, (int, float)):
                told = study.tell(trial, float(value))  # a non-finite value makes the trial FAIL
            else:
                told = study.tell(trial, state=TrialState.FAIL)
            failed += told.state != TrialState.COMPLETE
        return failed

    def _save_results(self, study) -> None:
        from optuna.trial import TrialState

        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "n_trials": len(study.trials)}
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            results.update(best_params=study.best_trial.params, best_value=study.best_value)
            log.info("Best of the study: %s = %s", study.best_trial.params, study.best_value)
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")

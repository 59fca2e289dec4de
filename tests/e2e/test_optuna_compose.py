"""The Optuna sweeper from the command line, in combination: a user's own search space with no
direction, a study resumed by two sweep processes at once on one storage, a trial left RUNNING by a
killed process, and the mistakes refused before any run. Tiny model, real subprocesses, real SQLite
stores (MLflow's and Optuna's) under ``tmp_path``.
"""

from __future__ import annotations

import sqlite3
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from pipeline.tracking.study import open_storage
from tests.conftest import all_runs, pipeline_in_process, spawn

METRIC = "sts-dev_spearman_cosine"  # higher is better
OWN_SPACE = (
    "hydra/sweeper=optuna_study",  # no direction anywhere: it comes from the metric
    "++hydra.sweeper.params={training.learning_rate:'tag(log, interval(1e-4, 1e-1))'}",
)


def sweep_command(tmp_path, store_overrides, name: str, *overrides: str) -> list[str]:
    return [
        *(sys.executable, "-m", "pipeline", "-m", "debug=smoke", "tracking.log_model=false"),
        *OWN_SPACE,
        *overrides,
        *store_overrides,
        f"hydra.sweep.dir={tmp_path}/{name}",
        f"hydra.run.dir={tmp_path}/hydra",
    ]


def killed_trial(storage: str) -> int:
    """The study as a killed sweep leaves it: one trial RUNNING, its last heartbeat long ago."""
    study = optuna.create_study(study_name="shared", storage=open_storage(storage, 60, None), direction="maximize")
    trial = study.ask()
    trial.suggest_float("training.learning_rate", 1e-4, 1e-1, log=True)
    study._storage.record_heartbeat(trial._trial_id)
    with sqlite3.connect(storage.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'")
    return trial.number


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_sweeps_at_once_resume_one_study_maximise_and_fail_its_stale_trial(
    tmp_path, store_overrides, mlflow_client
):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    stale = killed_trial(storage)
    mlflow_client.search_experiments()  # the MLflow store exists, as the study that ran before left it
    seeded = ("hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=7", "hydra.sweeper.study_name=shared")
    sweeps = [
        spawn(
            sweep_command(tmp_path, store_overrides, name, *seeded, f"hydra.sweeper.storage={storage}"),
            tmp_path / f"sweep-{name}.log",
        )
        for name in ("a", "b")
    ]
    outputs = [sweep.finish(timeout=600) for sweep in sweeps]
    for sweep, output in zip(sweeps, outputs):
        assert sweep.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    states = {t.number: t.state for t in study.trials}
    assert states.pop(stale) == TrialState.FAIL  # its heartbeat had stopped: failed by the sweep that came next
    assert len(states) == 4 and set(states.values()) == {TrialState.COMPLETE}
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    rates = [t.params["training.learning_rate"] for t in done]
    assert len(set(rates)) == 4  # the two processes, seeded alike, proposed different trials
    space = {"training.learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
    for trial in done:  # trial N proposed with seed + N, whichever process ran it: a seeded sweep is reproducible
        alone = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7 + trial.number))
        assert trial.params == alone.ask(space).params, trial.number

    runs = all_runs(mlflow_client)
    parents = [r for r in runs if r.data.tags.get("pipeline.role") == "sweep"]
    assert len(parents) == 2
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["pipeline.direction"] == "maximize"
        assert parent.data.tags["optuna.study_name"] == "shared"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
        values = [c.data.metrics[METRIC] for c in children]
        assert parent.data.metrics["sweep.best"] == max(values)
    # what the jobs ran is what Optuna recorded, and the study's best is its highest value
    ran = sorted(float(r.data.params["training.learning_rate"]) for r in runs if r not in parents)
    assert ran == sorted(rates)
    values = [t.value for t in done]
    assert len(set(values)) > 1, "the trials scored alike: the best could be either end"
    assert study.best_value == max(values)


@pytest.mark.slow
def test_a_contradicting_direction_or_a_key_searched_and_set_is_refused_before_any_run(
    tmp_path, store_overrides, mlflow_client, capfd
):
    for mistake, says in [
        (
            "hydra.sweeper.direction=minimize",
            f"error: the sweep could not start: hydra.sweeper.direction=minimize contradicts optimized_metric='{METRIC}'",
        ),
        (
            "training.learning_rate=1e-3",
            "error: the sweep could not start: training.learning_rate is both in hydra.sweeper.params",
        ),
    ]:
        command = sweep_command(tmp_path, store_overrides, "refused", mistake, "hydra.sweeper.n_trials=1")
        out = pipeline_in_process(command[3:], capfd)  # refused before any job: no new interpreter
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and lines[-1].startswith(says), out.stderr[-3000:]
        assert "Traceback" not in out.stderr
    assert all_runs(mlflow_client) == []  # no parent run, no job
    assert not (tmp_path / "optuna.db").exists()  # no study either

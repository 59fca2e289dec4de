"""The Optuna sweeper's rules without a job: the direction it optimises in, refused search spaces, stale
trials. Real Optuna studies in SQLite files under ``tmp_path``."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

from pipeline import CONF_DIR, PipelineError
from pipeline.sweep import _check_sweeper
from pipeline.tracking.direction import metric_direction, sweep_direction
from pipeline.tracking.study import check_heartbeat, fail_stale_trials, open_storage
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("sts-dev_spearman_cosine", "maximize"),
        ("triplet-dev_cosine_accuracy", "maximize"),
        ("ir-dev_cosine_ndcg@10", "maximize"),
        ("mse-dev_negative_mse", "maximize"),  # MSEEvaluator negates its error: higher is better
        ("eval_loss", "minimize"),
        ("train_loss", "minimize"),
        ("eval_sts-dev_loss", "minimize"),
        ("stsb-dev_mse", "minimize"),
    ],
)
def test_evaluator_metrics_are_maximised_and_losses_minimised(metric, direction):
    assert metric_direction(metric) == direction
    assert sweep_direction(None, metric) == direction  # null: from the metric
    assert sweep_direction(direction, metric) == direction  # stated and agreeing
    other = "minimize" if direction == "maximize" else "maximize"
    with pytest.raises(PipelineError, match=f"hydra.sweeper.direction={other} contradicts optimized_metric="):
        sweep_direction(other, metric)


@pytest.mark.parametrize(
    "overrides",
    [
        ["hydra/sweeper=optuna_study"],
        *([f"sweep={path.stem}"] for path in sorted((CONF_DIR / "sweep").glob("*.yaml")) if path.stem != "slurm"),
        ["sweep=optuna_lr", "evaluator=triplet"],
        ["sweep=optuna_lr", "optimized_metric=eval_loss"],
    ],
)
def test_every_sweeper_config_sweeps_in_the_direction_of_its_metric(overrides):
    config = compose_config(overrides, hydra=True)
    needs_metric, direction = _check_sweeper(config)
    assert direction == metric_direction(config.optimized_metric)
    assert direction == ("minimize" if config.optimized_metric == "eval_loss" else "maximize")
    if needs_metric:  # an Optuna config states no direction: it comes from the metric
        assert config.hydra.sweeper.direction is None


def test_a_key_both_searched_and_on_the_command_line_or_split_at_its_dots_is_refused():
    config = compose_config(["sweep=optuna_lr", "training.learning_rate=1e-4"], hydra=True)
    with pytest.raises(PipelineError, match=r"training.learning_rate is both in hydra.sweeper.params \(tag\(log"):
        _check_sweeper(config)
    config = compose_config(["sweep=optuna_lr", "++training.warmup_steps=0.1"], hydra=True)
    with pytest.raises(PipelineError, match="training.warmup_steps is both in hydra.sweeper.params"):
        _check_sweeper(config)
    _check_sweeper(compose_config(["sweep=optuna_lr", "training.max_steps=3"], hydra=True))  # not searched: fine
    split = "+hydra.sweeper.params.training.max_steps='range(1, 4)'"  # Hydra splits the key at its dots
    with pytest.raises(PipelineError, match=r"hydra.sweeper.params.training is a mapping.*write the key whole"):
        _check_sweeper(compose_config(["hydra/sweeper=optuna_study", split], hydra=True))


def test_a_heartbeat_that_would_fail_live_trials_is_refused():
    check_heartbeat(60, None)
    check_heartbeat(None, None)  # no heartbeat
    with pytest.raises(PipelineError, match="grace_period longer than it"):
        check_heartbeat(60, 30)
    with pytest.raises(PipelineError, match="grace_period=30 needs a heartbeat"):
        check_heartbeat(None, 30)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_whose_heartbeat_stopped_is_failed(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=open_storage(url, 60, None), direction="maximize")
    killed, alive, unbeating = study.ask(), study.ask(), study.ask()
    storage = open_storage(url, 60, None)
    storage.record_heartbeat(killed._trial_id)
    storage.record_heartbeat(alive._trial_id)
    with sqlite3.connect(tmp_path / "optuna.db") as db:  # the killed process's last heartbeat, long ago
        db.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000' WHERE trial_id = ?", (killed._trial_id,))  # fmt: skip
    again = optuna.load_study(study_name="s", storage=open_storage(url, 60, None))  # the next sweep
    assert fail_stale_trials(again) == [killed.number]
    states = {t.number: t.state for t in optuna.load_study(study_name="s", storage=url).trials}
    assert states == {
        killed.number: TrialState.FAIL,
        alive.number: TrialState.RUNNING,
        unbeating.number: TrialState.RUNNING,
    }
    assert fail_stale_trials(again) == []  # nothing left to fail

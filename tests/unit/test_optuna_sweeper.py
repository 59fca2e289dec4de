"""The Optuna sweeper without a job: its search space, where its study lives, how it resumes."""

from __future__ import annotations

from contextlib import ExitStack

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from pipeline import REPO_ROOT, PipelineError
from pipeline.runtime.optuna_sweeper import OptunaSweeper, search_space
from pipeline.tracking.study import StudySettings, default_storage, previous_parent, record_parent, settings
from tests.conftest import compose_config


def test_hydra_sweep_grammar_maps_to_optuna_distributions():
    space, fixed = search_space(
        [
            "training.learning_rate=tag(log, interval(1e-6, 1e-3))",
            "training.warmup_steps=interval(0.0, 0.3)",
            "training.per_device_train_batch_size=range(8, 40, 8)",
            "loss=choice(mnrl, cached_mnrl)",
            "debug=smoke",
        ]
    )
    assert space == {
        "training.learning_rate": FloatDistribution(1e-6, 1e-3, log=True),
        "training.warmup_steps": FloatDistribution(0.0, 0.3),
        "training.per_device_train_batch_size": IntDistribution(8, 32, step=8),  # range's stop is exclusive
        "loss": CategoricalDistribution(["mnrl", "cached_mnrl"]),
    }
    assert fixed == ["debug=smoke"]


def test_the_study_is_stored_beside_a_sqlite_mlflow_store_else_under_mlruns(tmp_path):
    assert default_storage(f"sqlite:///{tmp_path}/store/mlflow.db") == f"sqlite:///{tmp_path}/store/optuna.db"
    assert default_storage("http://127.0.0.1:5000") == f"sqlite:///{REPO_ROOT}/mlruns/optuna.db"


def test_the_study_name_follows_the_search_space_and_overrides_not_n_trials():
    def name(*overrides: str) -> str:
        return settings(compose_config(["sweep=optuna_lr", *overrides], hydra=True)).name

    base = name("debug=smoke")
    assert base.startswith("example-") and base == name("debug=smoke", "hydra.sweeper.n_trials=3")
    assert base != name("debug=smoke", "+hydra.sweeper.params.seed='choice(1, 2)'")
    assert base != name("debug=smoke", "seed=7") != name("debug=smoke", "hydra.sweeper.direction=minimize")
    assert name("hydra.sweeper.study_name=mine", "hydra.sweeper.storage=sqlite:///x.db") == "mine"


def sweeper(seed: int | None) -> OptunaSweeper:
    return OptunaSweeper(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": seed}),
        direction=None,
        storage=None,
        study_name=None,
        n_trials=2,
        n_jobs=1,
        max_failure_rate=0.0,
        params=None,
        heartbeat_interval=None,
        grace_period=None,
    )


def test_a_seeded_sampler_proposes_each_trial_from_its_number(tmp_path):
    space, _ = search_space(["x=interval(0.0, 1.0)", "n=range(0, 1000)"])

    def start(storage: str):  # what each sweep process does: load the study, its sampler seeded
        sweep = sweeper(seed=3)
        study = optuna.create_study(
            study_name="s", storage=storage, direction="maximize", sampler=sweep._sampler(0), load_if_exists=True
        )
        return sweep, study

    shared = f"sqlite:///{tmp_path}/shared.db"
    (sweep_a, a), (sweep_b, b) = start(shared), start(shared)
    with ExitStack() as heartbeats:  # two processes asking at once, one trial each
        first, second = sweep_a._ask(a, space, heartbeats), sweep_b._ask(b, space, heartbeats)
    assert (first.number, second.number) == (0, 1)
    assert first.params != second.params  # not the same trial twice
    a.tell(first, 0.5)
    b.tell(second, 0.6)
    # one sweep alone, in a fresh study, proposes exactly the same trials: the seed follows the number
    sweep_c, alone = start(f"sqlite:///{tmp_path}/alone.db")
    with ExitStack() as heartbeats:
        assert [sweep_c._ask(alone, space, heartbeats).params for _ in range(2)] == [first.params, second.params]
    # a resumed study does not propose its first trials again
    sweep_d, resumed = start(shared)
    with ExitStack() as heartbeats:
        third = sweep_d._ask(resumed, space, heartbeats)
    assert third.number == 2 and third.params not in (first.params, second.params)


def test_a_study_links_each_sweep_to_the_last_and_keeps_its_direction(tmp_path):
    study = StudySettings(f"sqlite:///{tmp_path}/optuna.db", "example-1234")
    assert previous_parent(study, "maximize") is None  # a new study
    record_parent(study, "run-a")
    assert previous_parent(study, "maximize") == "run-a"
    record_parent(study, "run-b")
    assert previous_parent(study, "maximize") == "run-b"
    with pytest.raises(PipelineError, match="was run to maximize, not minimize: set hydra.sweeper.study_name"):
        previous_parent(study, "minimize")

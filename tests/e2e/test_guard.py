"""The divergence and collapse guard on real (tiny) training runs: stopped, FAILED, reason tagged."""

from __future__ import annotations

import math

import pytest

from pipeline.runtime.callbacks import TrainingGuard
from pipeline.runtime.guard import TrainingStopped, chance_loss
from pipeline.stages.spec import read_guard, read_spec
from tests.conftest import all_runs, compose_config, logged_models

SMOKE = ("debug=smoke", "training.max_steps=12")


def _failed_run(mlflow_client):
    (run,) = all_runs(mlflow_client)
    assert run.info.status == "FAILED"
    return run


@pytest.mark.slow
def test_learning_rate_1e6_is_stopped_and_failed_with_the_reason(run_job, mlflow_client):
    with pytest.raises(TrainingStopped, match="training stopped at step"):
        run_job(*SMOKE, "training.learning_rate=1e6")
    run = _failed_run(mlflow_client)
    tags = run.data.tags
    assert tags["guard.check"] in {"non_finite", "collapse", "chance_loss"}
    step = int(tags["guard.step"])
    assert 1 <= step < 12
    # the reason names what the check saw, not only the advice every reason carries
    said = {
        "non_finite": ("is nan", "is inf", "not finite"),
        "collapse": ("collapsed",),
        "chance_loss": ("chance value",),
    }
    assert f"step {step}" in tags["failure_reason"]
    assert any(words in tags["failure_reason"] for words in said[tags["guard.check"]]), tags["failure_reason"]
    # stopped there: no training step after the trip, and no model logged as a result
    assert max(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss")) == step
    assert logged_models(mlflow_client, run) == []
    assert not any(name.startswith("sts-test") for name in run.data.metrics)


@pytest.mark.slow
def test_collapsed_embeddings_trip_the_collapse_check(run_job, mlflow_client):
    with pytest.raises(TrainingStopped, match="collapsed"):
        run_job(*SMOKE, "training.learning_rate=1e6", "guard.collapse_every=1")
    assert _failed_run(mlflow_client).data.tags["guard.check"] == "collapse"


@pytest.mark.slow
def test_healthy_run_is_not_stopped(run_job, mlflow_client):
    result = run_job(*SMOKE, "guard.collapse_every=1")
    assert mlflow_client.get_run(result.run_id).info.status == "FINISHED"
    run = mlflow_client.get_run(result.run_id)
    assert "guard.check" not in run.data.tags and len(logged_models(mlflow_client, run)) == 1


def test_loss_at_chance_for_patience_steps_trips():
    from transformers import TrainerControl, TrainerState

    spec = read_spec(compose_config(["guard.chance_patience=3"]))
    chance = chance_loss(spec.loss.class_name, ["anchor", "positive"], 32, ranks=1)
    assert chance == pytest.approx(math.log(32))
    assert chance_loss(spec.loss.class_name, ["anchor", "positive"], 32, ranks=2) == pytest.approx(math.log(64))
    assert chance_loss("CoSENTLoss", ["s1", "s2", "score"], 32, ranks=1) is None
    matryoshka = read_spec(compose_config(["loss.matryoshka_dims=[32,16]", "loss.matryoshka_weights=[1,0.5]"])).loss
    assert matryoshka.matryoshka_scale == 1.5 and read_spec(compose_config([])).loss.matryoshka_scale == 1.0
    guard = TrainingGuard(spec.guard, model=None, chance=chance)
    state, control = TrainerState(), TrainerControl()
    for step, loss in [(1, chance + 0.2), (2, chance), (3, chance + 1e-4), (4, chance - 1e-4)]:
        state.global_step = step
        guard.on_log(None, state, control, logs={"loss": loss, "grad_norm": 0.1})
    assert guard.trip is None and not control.should_training_stop  # at chance for 2 steps only
    state.global_step = 5
    guard.on_log(None, state, control, logs={"loss": chance, "grad_norm": 0.1})
    assert guard.trip.check == "chance_loss" and guard.trip.step == 5 and control.should_training_stop
    assert not control.should_save


@pytest.mark.parametrize("fp16", [True, False])
def test_gradscaler_skips_are_tolerated_up_to_the_patience_divergence_is_not(fp16, tmp_path):
    """fp16: a non-finite grad_norm with a finite loss is a GradScaler skip; only
    guard.nonfinite_patience consecutive ones trip. Without fp16 (no scaler) it trips at once."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), fp16=fp16, use_cpu=True)
    settings = read_guard(compose_config(["guard.nonfinite_patience=3"]).guard)
    guard = TrainingGuard(settings, model=None, chance=None)
    state, control = TrainerState(), TrainerControl()
    logged = [(1, math.inf), (2, math.inf), (3, 0.5), (4, math.inf), (5, math.nan), (6, math.inf)]
    for step, grad_norm in logged:
        state.global_step = step
        guard.on_log(args, state, control, logs={"loss": 1.0, "grad_norm": grad_norm})
        if guard.trip:
            break
    assert guard.trip.check == "non_finite" and control.should_training_stop
    # fp16: two skips, a good step, then the third consecutive skip at step 6; no scaler: step 1
    assert guard.trip.step == (6 if fp16 else 1), guard.trip
    if fp16:
        assert "3 consecutive logged steps" in guard.trip.reason


def test_a_non_finite_loss_trips_at_once_even_in_fp16(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), fp16=True, use_cpu=True)
    guard = TrainingGuard(read_guard(compose_config([]).guard), model=None, chance=None)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 1
    guard.on_log(args, state, control, logs={"loss": math.nan, "grad_norm": math.inf})
    assert guard.trip.step == 1 and guard.trip.reason == "loss is nan"

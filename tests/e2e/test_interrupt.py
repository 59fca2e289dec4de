"""Real processes interrupted mid-training: SIGTERM ends the run KILLED after a clean checkpoint;
SIGKILL leaves it RUNNING, ``pipeline.resume`` finishes the same run from its own checkpoints (another
job in the same output folder keeps its own) with the uninterrupted metrics, its config read in today's
shape when older code logged it, and ``pipeline.runs mark-stale`` fails what nobody resumes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.runtime.checkpoint import MARKER
from pipeline.tracking import artifact_text
from tests.conftest import Spawned, all_runs, logged_models, spawn
from tests.e2e.test_rerun import LOGGED_BEFORE_EVALUATORS_GROUP

TRAIN = ("debug=smoke", "training.save_strategy=steps", "training.save_steps=2", "training.logging_steps=1")


def _start(tmp_path: Path, store_overrides, name: str, *overrides: str) -> tuple[Spawned, Path]:
    """The job and its output folder (``hydra.run.dir``): its checkpoints go to ``<folder>/<run id>/trainer``."""
    hydra_dir = tmp_path / name
    command = [sys.executable, "-m", "pipeline", *overrides, *store_overrides, f"hydra.run.dir={hydra_dir}"]
    process = spawn(command, tmp_path / f"{name}.log", env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return process, hydra_dir


def _wait_for_checkpoint(process: Spawned, hydra_dir: Path, step: int, timeout: float = 240) -> Path:
    """The job's trainer folder, once its ``checkpoint-{step}`` is committed."""
    deadline = time.monotonic() + timeout
    while not (found := [*hydra_dir.glob(f"*/trainer/checkpoint-{step}/{MARKER}")]):
        if process.poll() is not None:
            raise AssertionError(f"the job ended before checkpoint-{step}:\n{process.output()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no checkpoint-{step} within {timeout} s")
        time.sleep(0.02)
    return found[0].parent.parent


@pytest.mark.timed
@pytest.mark.slow
def test_sigterm_mid_training_checkpoints_then_ends_killed(tmp_path, store_overrides, mlflow_client):
    process, hydra_dir = _start(tmp_path, store_overrides, "term", *TRAIN, "training.max_steps=400")
    trainer_dir = _wait_for_checkpoint(process, hydra_dir, 2)
    process.send_signal(signal.SIGTERM)
    output = process.finish(timeout=120)
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    (run,) = all_runs(mlflow_client)
    assert run.info.status == "KILLED"
    assert "stopped by a signal" in run.data.tags["failure_reason"]
    last_step = max(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss"))
    assert 2 <= last_step < 400
    # the clean checkpoint is the step training stopped at, committed; metrics were flushed up to it
    assert (trainer_dir / f"checkpoint-{last_step}" / MARKER).is_file()
    assert run.data.tags["checkpoint.dir"] == str(trainer_dir.resolve())
    assert trainer_dir == hydra_dir / run.info.run_id / "trainer"


@pytest.mark.timed
@pytest.mark.slow
def test_kill_9_then_resume_finishes_the_same_run_with_uninterrupted_metrics(
    tmp_path, store_overrides, mlflow_client, cli
):
    steps = ("training.max_steps=8",)
    # in the folder the reference job below uses too (`cli`: hydra.run.dir=<tmp>/hydra), as jobs
    # started in the same second share one: the reference's later checkpoints must not be resumed from
    process, hydra_dir = _start(tmp_path, store_overrides, "hydra", *TRAIN, *steps)
    trainer_dir = _wait_for_checkpoint(process, hydra_dir, 4)
    process.send_signal(signal.SIGSTOP)  # freeze it where it is, then kill it the hard way
    process.kill()
    process.wait(timeout=30)
    # the newest checkpoint it committed: step 4, or a later one when the machine was slow to look
    last = max((p.parent for p in trainer_dir.glob(f"checkpoint-*/{MARKER}")), key=lambda p: int(p.name.split("-")[1]))
    (killed,) = all_runs(mlflow_client)
    assert killed.info.status == "RUNNING"  # SIGKILL leaves no chance to say otherwise
    # a half-written checkpoint (no marker) is never picked up
    (trainer_dir / "checkpoint-999").mkdir()
    (trainer_dir / "checkpoint-999" / "model.safetensors").write_bytes(b"half")
    reference = cli(*TRAIN, *steps, "tracking.run_name=reference", in_process=True)  # same output folder, to step 8
    assert reference.returncode == 0, reference.stderr[-3000:]
    # its config as the code before evaluators became one group logged it: the one evaluator node (the sts
    # node of a run that code logged) beside an empty evaluators node
    logged = OmegaConf.create(artifact_text(mlflow_client, killed.info.run_id, "config.yaml"))
    assert list(logged.evaluators) == ["sts"] and "evaluator" not in logged
    logged.evaluator, logged.evaluators = OmegaConf.load(LOGGED_BEFORE_EVALUATORS_GROUP).evaluator, {}
    mlflow_client.log_text(killed.info.run_id, OmegaConf.to_yaml(logged), "config.yaml")

    resumed = cli(
        killed.info.run_id, "--tracking-uri", store_overrides[0].split("=", 1)[1], module="pipeline.resume", timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("evaluator nodes of an older shape read as evaluators.sts\n") == 1
    assert not (trainer_dir / "checkpoint-999").exists()

    runs = {r.data.tags["mlflow.runName"]: r for r in all_runs(mlflow_client)}
    assert len(runs) == 2  # resumed into the same run: no new one
    finished = mlflow_client.get_run(killed.info.run_id)
    uninterrupted = runs["reference"]
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["resumed_from"] == str(last.resolve())  # its own newest, not the reference's
    assert trainer_dir == hydra_dir / killed.info.run_id / "trainer"
    reference_dir = hydra_dir / uninterrupted.info.run_id / "trainer"
    assert uninterrupted.data.tags["checkpoint.dir"] == str(reference_dir.resolve()) != str(trainer_dir.resolve())
    assert "failure_reason" not in finished.data.tags
    final = {k: v for k, v in finished.data.metrics.items() if k.startswith("sts-")}
    assert final and final == {k: v for k, v in uninterrupted.data.metrics.items() if k.startswith("sts-")}
    loss = {m.step: m.value for m in mlflow_client.get_metric_history(finished.info.run_id, "loss")}
    reference_loss = {m.step: m.value for m in mlflow_client.get_metric_history(uninterrupted.info.run_id, "loss")}
    assert loss == reference_loss and max(loss) == 8
    assert len(logged_models(mlflow_client, finished)) == 1
    # rotation (save_total_limit 2) kept the latest committed checkpoints only
    assert sorted(p.name for p in trainer_dir.iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-6",
        "checkpoint-8",
    ]


@pytest.mark.slow
def test_mark_stale_fails_runs_left_running(tmp_path, store_overrides, mlflow_client, cli):
    experiment = mlflow_client.create_experiment("stale", artifact_location=(tmp_path / "a").as_uri())
    lost = mlflow_client.create_run(experiment).info.run_id
    finished = mlflow_client.create_run(experiment).info.run_id
    mlflow_client.set_terminated(finished, "FINISHED")
    uri = store_overrides[0].split("=", 1)[1]
    fresh = cli("mark-stale", "--older-than", "5", "--tracking-uri", uri, module="pipeline.runs", timeout=60)
    assert fresh.returncode == 0 and "marked 0" in fresh.stdout, fresh.stderr
    out = cli("mark-stale", "--older-than", "0", "--tracking-uri", uri, module="pipeline.runs", timeout=60)
    assert out.returncode == 0 and lost in out.stdout, out.stderr
    assert mlflow_client.get_run(lost).info.status == "FAILED"
    assert "stale" in mlflow_client.get_run(lost).data.tags["failure_reason"]
    assert mlflow_client.get_run(finished).info.status == "FINISHED"

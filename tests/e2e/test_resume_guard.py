"""``pipeline.resume`` refuses a run whose process still runs, and resumes a dead one even when the
store's URI is spelled differently (params that exist are not logged again), with its secret given again,
and with a key its logged config lacks (a run logged before the key existed) taken from today's defaults."""

from __future__ import annotations

import signal

import pytest
from omegaconf import OmegaConf

from pipeline.tracking import artifact_text
from tests.conftest import all_runs
from tests.e2e.test_interrupt import TRAIN, _start, _wait_for_checkpoint

TOKEN = "tok-resume-7c6b5a"


@pytest.mark.timed
@pytest.mark.slow
def test_resume_refuses_a_live_run_then_resumes_it_under_another_uri_spelling(
    tmp_path, store, store_overrides, mlflow_client, cli
):
    process, hydra_dir = _start(
        tmp_path, store_overrides, "live", *TRAIN, "training.max_steps=6", f"+training.hub_token={TOKEN}"
    )
    try:
        trainer_dir = _wait_for_checkpoint(process, hydra_dir, 2)
        process.send_signal(signal.SIGSTOP)  # alive, mid-training, its checkpoint-4 perhaps half written
        (run,) = all_runs(mlflow_client)
        refused = cli(run.info.run_id, "--tracking-uri", store["uri"], module="pipeline.resume", in_process=True)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert f"run {run.info.run_id} is still running (process {process.pid}" in refused.stderr
        assert (trainer_dir / "checkpoint-2").is_dir() and process.poll() is None  # nothing touched
    finally:
        process.kill()
        process.wait(timeout=30)
    assert mlflow_client.get_run(run.info.run_id).info.status == "RUNNING"
    logged = OmegaConf.create(artifact_text(mlflow_client, run.info.run_id, "config.yaml"))
    del logged.hardware.join_timeout_s  # as a run logged before the key existed
    mlflow_client.log_text(run.info.run_id, OmegaConf.to_yaml(logged), "config.yaml")
    same_store = store["uri"].replace("/mlflow.db", "/./mlflow.db")
    resumed = cli(
        run.info.run_id, f"training.hub_token={TOKEN}", "--tracking-uri", same_store, module="pipeline.resume"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "logged as ***" not in resumed.stderr  # the secret was given again
    assert "key 'hardware.join_timeout_s' was not logged: today's default 300 used" in resumed.stderr
    assert TOKEN.encode() not in (tmp_path / "mlflow.db").read_bytes()
    finished = mlflow_client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.params["tracking.uri"] == store["uri"]
    assert max(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss")) == 6

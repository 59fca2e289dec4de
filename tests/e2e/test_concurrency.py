"""Several processes writing into one fresh SQLite store at once: no run and no metric is lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import REPO_ROOT
from tests.conftest import all_runs

PROCESSES = 4
STEPS = 150

# One writer: the pipeline's own experiment set-up and run (tracking.open_experiment / job_run),
# then the trainer-metrics callback (asynchronous logging) for STEPS steps, as a training job does.
WRITER = """
import sys
from omegaconf import OmegaConf
from pipeline import tracking
index, uri, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = OmegaConf.create({"tracking": {"uri": uri, "artifact_root": root, "experiment_name": "shared", "run_name": None,
                        "log_model": False}, "training": {"learning_rate": 0.001 * (index + 1)}})
tracking.check_target(cfg.tracking)
experiment = tracking.open_experiment(cfg.tracking)
with tracking.job_run(cfg, experiment, f"writer-{index}", [f"index={index}"], {"writer": str(index)}):
    callback = tracking.metrics_callback()
    state = type("State", (), {"is_world_process_zero": True, "global_step": 0})()
    for step in range(1, %d + 1):
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": index + step / 1000, "grad_norm": 1.0})
""" % STEPS


@pytest.mark.slow
def test_parallel_writers_into_one_sqlite_store_lose_nothing(store, tmp_path, mlflow_client):
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(i), store["uri"], store["artifact_root"]], cwd=REPO_ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(PROCESSES)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    runs = all_runs(mlflow_client)
    assert sorted(r.data.tags["writer"] for r in runs) == [str(i) for i in range(PROCESSES)]
    assert len({r.info.experiment_id for r in runs}) == 1
    for run in runs:
        index = int(run.data.tags["writer"])
        assert run.info.status == "FINISHED"
        assert run.data.params["training.learning_rate"] == str(0.001 * (index + 1))
        history = mlflow_client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
        assert {round(m.value - index, 6) for m in history} == {round(s / 1000, 6) for s in range(1, STEPS + 1)}
        assert len(mlflow_client.get_metric_history(run.info.run_id, "grad_norm")) == STEPS


@pytest.mark.slow
def test_parallel_pipeline_jobs_into_one_store(store_overrides, tmp_path, mlflow_client):
    processes = [
        subprocess.Popen([sys.executable, "-m", "pipeline", "debug=smoke", f"seed={i}", *store_overrides,
                          f"hydra.run.dir={tmp_path}/job{i}"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    runs = all_runs(mlflow_client)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
        assert "sts-test_spearman_cosine" in run.data.metrics

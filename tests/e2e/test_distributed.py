"""hardware=cpu_ddp: two real gloo ranks on CPU started by `accelerate launch`, one MLflow run; reruns,
resumes and signals go through the same launcher."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.tracking import flatten
from tests.conftest import all_runs, spawn

pytestmark = pytest.mark.slow

DDP = ("hardware=cpu_ddp", "debug=smoke")


def test_cpu_ddp_sweep_jobs_are_one_run_each_gather_across_ranks_and_a_rerun_replays_one_in_2_ranks(
    cli, mlflow_client, store, tmp_path
):
    """Two cpu_ddp jobs of one sweep (loss.gather_across_devices false, true), each mining its hard negatives
    first: each is one FINISHED run of world size 2 that records the config its ranks ran, trained on the
    one mined set its ranks share; pipeline.rerun replays one in 2 ranks again."""
    cache = tmp_path / "mined"
    # cache_max_age_days=0: rank 0 mines afresh; rank 1 still takes rank 0's new set rather than refusing it as old
    mined = ("stages=[load,mine,train,evaluate]", f"mine.cache_dir={cache}", "mine.cache_max_age_days=0",
             "training.per_device_train_batch_size=2")  # the smoke rows mine 4 triplets: a batch of 2 on each rank  # fmt: skip
    sweep = ("-m", *DDP, *mined, "tracking.log_model=false", "loss.gather_across_devices=false,true")
    # Python reports each process's imports (to stderr, the ranks' too)
    out = cli(*sweep, f"hydra.sweep.dir={tmp_path}/sweep", timeout=900, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert out.returncode == 0, "\n".join(line for line in out.stderr.splitlines() if "import time:" not in line)[
        -4000:
    ]
    jobs = [r for r in all_runs(mlflow_client) if r.data.tags.get("world_size") == "2"]
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in jobs)
    # MLflow is imported by the sweep's process and each job's rank 0, not by rank 1, which writes nothing
    assert len(re.findall(r"\|\s+mlflow$", out.stderr, flags=re.M)) == 1 + len(jobs)
    assert len(all_runs(mlflow_client)) == 3, "one run per job (and the sweep's parent), not one per rank"
    # startup_seconds counts from the launching process (the sweep's), not from rank 0's own start
    first, second = sorted(jobs, key=lambda r: r.info.start_time)
    assert second.data.metrics["startup_seconds"] > (second.info.start_time - first.info.start_time) / 1000
    # rank 0 mined each job's set (a miss); rank 1, which may not mine, read it: one folder per key
    assert [r.data.tags["mine.cache"] for r in jobs] == ["miss", "miss"]
    folders = {Path(r.data.tags["mine.folder"]).name for r in jobs}
    assert sorted(p.name for p in cache.iterdir()) == sorted([*folders, *(f"{f}.lock" for f in folders)])
    first_loss = {
        r.data.params["loss.gather_across_devices"]: mlflow_client.get_metric_history(r.info.run_id, "loss")[0].value
        for r in jobs
    }
    # gathered, each anchor is scored against both ranks' positives and negatives (8 candidates, not 4): the
    # loss of the same first batch is higher, so the candidates really crossed the ranks
    assert first_loss["True"] > first_loss["False"] + 0.1, first_loss
    run = next(r for r in jobs if r.data.params["loss.gather_across_devices"] == "False")
    assert run.data.tags["batch.per_device"] == "2" and run.data.tags["batch.global"] == "4"
    assert run.data.tags["merged_forward"] == "on"  # one forward per step through DDP's wrapped model
    assert run.data.params["hardware.num_processes"] == "2"
    assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert math.isfinite(run.data.metrics["sts-test_spearman_cosine"])
    # the ranks ran the one config the launching process resolved, and it is what the run records
    launched = [OmegaConf.load(p) for p in (tmp_path / "sweep").glob("*/launch-*/job.yaml")]  # each launch's folder
    assert len(launched) == 2
    for job in launched:
        assert "${" not in OmegaConf.to_yaml(job.config)
        resolved = flatten(OmegaConf.to_container(job.config))
        logged = next(r for r in jobs if r.data.params["seed"] == resolved["seed"] and r.data.params[
            "loss.gather_across_devices"] == str(resolved["loss.gather_across_devices"]))  # fmt: skip
        assert {k: logged.data.params.get(k) for k in resolved} == resolved
    # the run replayed by pipeline.rerun: 2 ranks again, identical metrics
    out = cli(
        run.info.run_id, "--tracking-uri", store["uri"], module="pipeline.rerun", in_process=True
    )  # ranks: their own
    assert out.returncode == 0 and "metrics match" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    (replay,) = [r for r in all_runs(mlflow_client) if r.data.tags.get("pipeline.rerun_of") == run.info.run_id]
    assert replay.info.status == "FINISHED" and replay.data.tags["world_size"] == "2", "rerun: not 2 ranks"
    assert replay.data.metrics["sts-test_spearman_cosine"] == run.data.metrics["sts-test_spearman_cosine"]


@pytest.mark.timed
def test_a_dead_rank_ends_the_job_quickly_and_the_run_failed(mlflow_client, store_overrides, tmp_path):
    import psutil

    command = [
        sys.executable,
        "-m",
        "pipeline",
        *DDP,
        "training.max_steps=100000",
        *store_overrides,
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    job = spawn(command, tmp_path / "job.log")
    try:
        deadline = time.monotonic() + 300
        while (
            not [*(tmp_path / "hydra").glob("launch-*/run.json")] and time.monotonic() < deadline and job.poll() is None
        ):
            time.sleep(0.5)
        assert [*(tmp_path / "hydra").glob("launch-*/run.json")], "rank 0 never started its run"
        time.sleep(5)  # let the ranks get into training
        ranks = [
            p for p in psutil.Process(job.pid).children(recursive=True) if "pipeline.rank" in " ".join(p.cmdline())
        ]
        rank1 = [p for p in ranks if p.environ().get("RANK") == "1"]
        assert len(rank1) == 1, [p.cmdline() for p in ranks]
        killed = time.monotonic()
        os.kill(rank1[0].pid, signal.SIGKILL)
        output = job.finish(timeout=180)
        ended_after = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 2, output[-3000:]
    assert ended_after < 120, ended_after
    assert "error: a rank failed" in output
    runs = all_runs(mlflow_client)
    assert len(runs) == 1 and runs[0].info.status == "FAILED", runs[0].data.tags
    assert "a rank failed" in runs[0].data.tags["failure_reason"]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks)


@pytest.mark.timed
def test_sigterm_of_a_cpu_ddp_job_checkpoints_ends_killed_and_resume_finishes_it(
    cli, mlflow_client, store, store_overrides, tmp_path
):
    from pipeline.runtime.checkpoint import MARKER

    train = ("training.save_strategy=steps", "training.save_steps=2", "training.logging_steps=1")
    command = [sys.executable, "-m", "pipeline", *DDP, *train, "training.max_steps=60", *store_overrides]
    job = spawn([*command, f"hydra.run.dir={tmp_path}/hydra"], tmp_path / "job.log")
    deadline = time.monotonic() + 300  # checkpoints go to the job's own folder, hydra/<run id>/trainer
    while not [*(tmp_path / "hydra").glob(f"*/trainer/checkpoint-2/{MARKER}")] and time.monotonic() < deadline:
        if job.poll() is not None:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # to the command only: it stops its ranks
    output = job.finish(timeout=180)
    assert job.returncode == 130, output[-3000:]
    assert output.count("stopping after this step") == 2, output[-3000:]  # each rank took it as a stop request
    (run,) = all_runs(mlflow_client)
    assert run.info.status == "KILLED", run.data.tags
    stopped = max(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss"))
    assert 2 <= stopped < 60, "the job must be interrupted mid-training"
    # both ranks stopped at one step boundary and the checkpoint of that step was committed
    trainer = tmp_path / "hydra" / run.info.run_id / "trainer"
    assert run.data.tags["checkpoint.dir"] == str(trainer.resolve())
    assert (trainer / f"checkpoint-{stopped}" / MARKER).is_file(), output[-3000:]
    resumed = cli(run.info.run_id, "--tracking-uri", store["uri"], module="pipeline.resume", in_process=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finished = mlflow_client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["world_size"] == "2"
    assert max(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss")) == 60
    assert len(all_runs(mlflow_client)) == 1

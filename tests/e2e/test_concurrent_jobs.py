"""Jobs started at the same moment: one process creates a new SQLite store, each job keeps its own
folder (keyed by its MLflow run id) even when the jobs share an output folder; machines of a
multi-node job wait for each other at most ``hardware.join_timeout_s`` and agree on a config digest
wherever their checkout lies; numeric names; a store password never printed."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import REPO_ROOT
from pipeline.runtime import launch
from pipeline.runtime.checkpoint import MARKER
from tests.conftest import all_runs, compose_config

JOBS = 3
CHECKPOINTING = (
    "debug=smoke", "training.save_strategy=steps", "training.save_steps=1", "tracking.log_model=false", "baseline=false",
)  # fmt: skip
PASSWORD = "pw-7c1d9e2f"


OPEN_STORE = "import sys; from pipeline import tracking; tracking.check_uri(sys.argv[1])"


@pytest.mark.slow
@pytest.mark.new_store
def test_processes_opening_a_new_store_at_once_all_find_it_created_and_migrated(store):
    """Without the lock, MLflow's schema migration runs in each of them at once: most fail."""
    import mlflow

    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, store["uri"]],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(JOBS)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * JOBS, "\n".join(o[-2000:] for o in outputs)
    client = mlflow.MlflowClient(store["uri"])
    run = client.create_run(client.create_experiment("after")).info.run_id
    client.log_metric(run, "loss", 1.0, step=1)
    assert [m.value for m in client.get_metric_history(run, "loss")] == [1.0]


def start_at_once(store_overrides: list[str], output_dir: Path, label: str, jobs: int) -> list[subprocess.Popen]:
    """``jobs`` checkpointing smoke jobs started together in one output folder, as jobs started in
    the same second share Hydra's ``outputs/DATE/TIME``."""
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                *CHECKPOINTING,
                f"tracking.run_name={label}-{i}",
                *store_overrides,
                f"hydra.run.dir={output_dir}",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(jobs)
    ]


@pytest.mark.slow
@pytest.mark.new_store
def test_jobs_started_at_once_into_a_new_then_an_existing_store_keep_their_own_runs_and_checkpoints(
    store, store_overrides, tmp_path
):
    import mlflow

    shared = tmp_path / "outputs"
    for label, jobs in (("new", JOBS), ("existing", 2)):  # the store's creation is the race to stress
        if label == "new":
            assert not Path(store["uri"].removeprefix("sqlite:///")).exists()
        processes = start_at_once(store_overrides, shared, label, jobs)
        outputs = [process.communicate(timeout=600)[0] for process in processes]
        for process, output in zip(processes, outputs):
            assert process.returncode == 0, output[-3000:]
        mlflow_client = mlflow.MlflowClient(store["uri"])  # opened once the jobs made the store
        runs = [r for r in all_runs(mlflow_client) if r.data.tags["mlflow.runName"].startswith(label)]
        assert sorted(r.data.tags["mlflow.runName"] for r in runs) == [f"{label}-{i}" for i in range(jobs)]
        for run in runs:
            assert run.info.status == "FINISHED"
            assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
            assert math.isfinite(run.data.metrics["sts-test_spearman_cosine"])
            folder = shared / run.info.run_id  # the job's own folder, keyed by its run id
            assert run.data.tags["checkpoint.dir"] == str((folder / "trainer").resolve())
            for step in (1, 2):
                assert (folder / "trainer" / f"checkpoint-{step}" / MARKER).is_file()
            assert sorted(p.name for p in (folder / "eval").iterdir()) == [
                "items",  # the per-item scores, written beside the evaluator's own files
                "similarity_evaluation_sts-dev_results.csv",
                "similarity_evaluation_sts-test_results.csv",
            ]
    assert len({p.parent for p in shared.glob("*/trainer")}) == JOBS + 2


def test_the_default_output_folder_is_one_per_process():
    cfg = compose_config(["debug=smoke"], hydra=True)
    assert Path(cfg.hydra.run.dir).name.endswith(f"-{os.getpid()}")


@pytest.mark.timed
@pytest.mark.slow
def test_machine_0_gives_up_on_a_machine_that_never_joins_after_join_timeout_s(cli, mlflow_client):
    started = time.monotonic()
    out = cli(
        "hardware=multi_node", "hardware.num_machines=2", "hardware.num_processes=2", "hardware.accelerator=cpu",
        "hardware.backend=gloo", "hardware.main_process_ip=127.0.0.1",
        f"hardware.main_process_port={launch.free_port()}", "hardware.join_timeout_s=4", "debug=smoke",
        timeout=150,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "not all 2 machines joined within hardware.join_timeout_s=4 s" in out.stderr, out.stderr[-3000:]
    assert time.monotonic() - started < 100  # torch's own rendezvous timeout is 600 s
    assert all_runs(mlflow_client) == []


def test_the_config_digest_is_the_same_for_a_checkout_at_another_path(tmp_path):
    """Another machine's checkout lives elsewhere: its resolved paths differ, its digest does not."""
    other = tmp_path / "elsewhere" / "checkout"
    for part in ("pipeline", "conf", "hydra_plugins"):
        shutil.copytree(REPO_ROOT / part, other / part, ignore=shutil.ignore_patterns("__pycache__"))
    overrides = ["hardware=multi_node", "hardware.main_process_ip=10.0.0.1", "data=stsb", "data.local_dir=/data/stsb"]
    script = (
        "import sys, pipeline; from hydra import compose, initialize_config_dir; from pipeline.runtime import launch\n"
        "with initialize_config_dir(config_dir=str(pipeline.CONF_DIR), version_base='1.3'):\n"
        "    cfg = compose('config', overrides=sys.argv[1:])\n"
        "print(pipeline.REPO_ROOT, cfg.tracking.uri, launch.config_digest(cfg))\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", script, *overrides, "hardware.machine_rank=1"],
        cwd=other, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(other)},
    )  # fmt: skip
    assert there.returncode == 0, there.stderr[-3000:]
    root, uri, digest = there.stdout.split()
    assert root == str(other) and uri == f"sqlite:///{other}/mlruns/mlflow.db"  # resolved at the other path
    here = compose_config(overrides)
    assert launch.config_digest(here) == digest
    # what is not inside the checkout still counts: the same data must be at the same path everywhere
    assert launch.config_digest(compose_config([*overrides[:-1], "data.local_dir=/data/stsb2"])) != digest


def test_a_store_password_is_never_printed(capsys):
    from types import SimpleNamespace

    from pipeline import PipelineError
    from pipeline.cli import print_summary, reported

    uri = f"postgresql://ci:{PASSWORD}@db.example.com:5432/mlflow"
    result = SimpleNamespace(run_id="abc", experiment_id="1", metrics={"sts-test_spearman_cosine": 0.5})
    print_summary(result, "experiment 'x'", uri)
    with pytest.raises(SystemExit) as stopped, reported():
        raise PipelineError(f"run 'x' is not in the store {uri!r}: check the id, or pass --tracking-uri.")
    printed = capsys.readouterr()
    assert stopped.value.code == 2
    assert PASSWORD not in printed.out + printed.err
    assert "--backend-store-uri postgresql://***@db.example.com:5432/mlflow" in printed.out
    assert "postgresql://***@db.example.com" in printed.err


@pytest.mark.slow
def test_numeric_names_and_a_sweep_against_a_server_with_a_password(cli, tmp_path, tracking_server):
    """Against the worker's ``mlflow server`` (its experiments ``2024`` and ``2025`` are this test's), the
    URI with a password (which the server does not check, and nothing may print)."""
    import mlflow

    address = tracking_server["uri"]
    uri = address.replace("http://", f"http://ci:{PASSWORD}@")
    common = ("debug=smoke", "tracking.log_model=false", f"tracking.uri={uri}")
    job = cli(*common, "name=2024", with_store=False, in_process=True)
    sweep = cli("-m", *common, "name=2025", "tracking.run_name=1.5", f"hydra.sweep.dir={tmp_path}/sweep",
                with_store=False, in_process=True)  # fmt: skip
    for out in (job, sweep):
        assert out.returncode == 0, out.stderr[-3000:]
        assert PASSWORD not in out.stdout + out.stderr
    assert f"--tracking-uri {address.replace('http://', 'http://***@')}" in sweep.stdout
    client = mlflow.MlflowClient(address)
    for experiment, name in (("2024", "2024 debug=smoke"), ("2025", "1.5")):  # name, overrides / run_name
        found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        job_runs = [r for r in found if r.data.tags.get("pipeline.role") != "sweep"]
        assert [r.info.status for r in job_runs] == ["FINISHED"]
        assert job_runs[0].data.tags["mlflow.runName"].startswith(name)

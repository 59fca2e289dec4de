"""hardware=multi_node: two machines simulated on this host, one real gloo rank each, each machine its
own ``python -m pipeline`` command and output folder; one MLflow run, owned by machine 0."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pipeline import PipelineError
from pipeline.runtime import launch
from pipeline.stages.spec import read_spec
from tests.conftest import Spawned, all_runs, compose_config, spawn


def two_machines(tmp_path: Path, store_overrides: list[str], *extra: str, machine_1: tuple[str, ...] = ()):
    """Start machine 0 and machine 1 side by side; return their processes."""
    port = launch.free_port()
    common = [
        "hardware=multi_node", "hardware.num_machines=2", "hardware.num_processes=2", "hardware.accelerator=cpu",
        "hardware.backend=gloo", "hardware.main_process_ip=127.0.0.1", f"hardware.main_process_port={port}",
        "hardware.timeout_s=60", "debug=smoke", *extra, *store_overrides,
    ]  # fmt: skip
    return [
        spawn(
            [
                sys.executable,
                "-m",
                "pipeline",
                *common,
                f"hardware.machine_rank={machine}",
                f"hydra.run.dir={tmp_path}/machine{machine}",
                *(machine_1 if machine else ()),
            ],
            tmp_path / f"machine{machine}.log",
        )  # fmt: skip
        for machine in (0, 1)
    ]


def finish(machines: list[Spawned], timeout: float) -> list[str]:
    """Each machine's output once it exits (killed after ``timeout`` seconds)."""
    try:
        return [machine.finish(timeout=timeout) for machine in machines]
    finally:
        stop(machines)


def stop(machines: list[Spawned]) -> None:
    """Kill what is left of each machine: its command, launcher and ranks (the launcher has its own session)."""
    import psutil

    for machine in machines:
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in [*psutil.Process(machine.pid).children(recursive=True), psutil.Process(machine.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        machine.wait()


def _announced(machine_dir: Path) -> bool:
    """Rank 0 of this machine's launch has started the run (``run.json`` in its launch folder)."""
    return bool([*machine_dir.glob("launch-*/run.json")])


@pytest.mark.timed
@pytest.mark.slow
def test_two_machines_finish_one_run_logged_by_machine_0(mlflow_client, store_overrides, tmp_path):
    outputs = finish(two_machines(tmp_path, store_overrides), timeout=300)
    assert "MLflow run" in outputs[0] and "FINISHED" in outputs[0], outputs[0][-3000:]
    assert "Machine 1: its ranks finished" in outputs[1], outputs[1][-3000:]
    runs = all_runs(mlflow_client)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["world_size"] == "2" and runs[0].data.params["hardware.num_machines"] == "2"
    assert [m.step for m in mlflow_client.get_metric_history(runs[0].info.run_id, "loss")] == [1, 2]
    # machine 1 ran its rank from its own folder and announced no run
    assert [*(tmp_path / "machine1").glob("launch-*/job.yaml")]
    assert not _announced(tmp_path / "machine1")


@pytest.mark.timed
@pytest.mark.slow
def test_a_rank_killed_on_machine_1_ends_both_machines_and_the_run_failed(mlflow_client, store_overrides, tmp_path):
    import psutil

    machines = two_machines(tmp_path, store_overrides, "training.max_steps=100000")
    try:
        deadline = time.monotonic() + 300
        while not _announced(tmp_path / "machine0") and time.monotonic() < deadline and machines[0].poll() is None:
            time.sleep(0.5)
        assert _announced(tmp_path / "machine0"), "rank 0 never started its run"
        time.sleep(5)  # into training
        below = psutil.Process(machines[1].pid).children(recursive=True)
        ranks = [p for p in below if "pipeline.rank" in p.cmdline() and p.environ().get("RANK") == "1"]
        assert len(ranks) == 1, [p.cmdline() for p in below]
        killed = time.monotonic()
        os.kill(ranks[0].pid, signal.SIGKILL)
    except BaseException:
        stop(machines)
        raise
    outputs = finish(machines, timeout=180)
    assert time.monotonic() - killed < 120
    assert machines[0].returncode != 0 and machines[1].returncode != 0, outputs
    run = all_runs(mlflow_client)[0]
    assert run.info.status == "FAILED" and "a rank failed" in run.data.tags["failure_reason"], run.data.tags


@pytest.mark.timed
@pytest.mark.slow
def test_machines_started_with_different_configs_are_both_refused_before_any_run(
    mlflow_client, store_overrides, tmp_path
):
    """Machine 1 runs another learning rate: both machines stop with the one-line mismatch error, and it is
    all they say of it (no elastic agent's log line or ChildFailedError traceback before it)."""
    machines = two_machines(tmp_path, store_overrides, machine_1=("training.learning_rate=1e-3",))
    outputs = finish(machines, timeout=300)
    for machine, output in enumerate(outputs):
        assert machines[machine].returncode == 2, f"machine {machine} ran on: {output[-3000:]}"
        errors = [line for line in output.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and errors[0].startswith("error: machine 1 joined with config"), output[-3000:]
        assert errors[0].endswith("(only hardware.machine_rank differs)."), output[-3000:]
        assert "Traceback" not in output and "ChildFailedError" not in output and "exitcode" not in output, (
            f"machine {machine}: {output[-3000:]}"
        )
    assert all_runs(mlflow_client) == [], "a machine started an MLflow run despite the mismatch"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hardware.machine_rank=2"], "hardware.machine_rank=2 with hardware.num_machines=2"),
        (["hardware.num_processes=3"], "hardware.num_processes=3 is not divisible by hardware.num_machines=2"),
    ],
)
def test_machine_rank_and_process_counts_are_checked(overrides, message):
    from pipeline.stages.validate import check_config

    cfg = compose_config(
        ["hardware=multi_node", "hardware.accelerator=cpu", "hardware.main_process_ip=10.0.0.1", *overrides]
    )
    with pytest.raises(PipelineError, match=message):
        check_config(read_spec(cfg))


@pytest.mark.timed
@pytest.mark.slow
def test_machine_0_that_never_answers_is_a_clear_error_in_bounded_time(cli, mlflow_client):
    started = time.monotonic()
    out = cli(
        "hardware=multi_node", "hardware.accelerator=cpu", "hardware.backend=gloo", "hardware.num_processes=2",
        "hardware.machine_rank=1", "hardware.main_process_ip=127.0.0.1",
        f"hardware.main_process_port={launch.free_port()}", "hardware.join_timeout_s=3", "debug=smoke",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: machine 0 at 127.0.0.1:" in out.stderr and "did not answer within 3 s" in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - started < 60
    assert all_runs(mlflow_client) == []


def test_gpu_profiles_without_cuda_are_one_line_errors(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = cli("hardware=gpu", "debug=smoke", in_process=True)
    assert out.returncode == 2 and out.stderr.strip().startswith("error: hardware.accelerator=cuda"), out.stderr
    assert "Traceback" not in out.stderr

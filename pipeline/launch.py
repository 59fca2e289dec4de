"""Several processes for one job: ``hardware.num_processes > 1`` starts ranks with ``accelerate launch``.

The Hydra process (a single run, or one job of a ``-m`` multirun) composes the config once and
writes it, resolved, to ``<output_dir>/launch/job.yaml``; ``accelerate launch`` (torch's elastic
agent underneath) starts the ranks with ``python -m pipeline.launch <output_dir>/launch``, and every
rank reads that one file: ranks never compose, so ``${now:}``-style values cannot differ between them.

Rank 0 runs the job exactly as a single process does and owns the one MLflow run (world size,
per-device and global batch among its tags); the other ranks train and write nothing to MLflow.
Rank 0 records the run id in ``launch/run.json`` as soon as the run starts and the job's result
in ``launch/result.json``.

A rank that fails or dies ends the job at once: the elastic agent stops the other ranks
(``max_restarts`` 0) and collectives time out after ``hardware.timeout_s``. The launching process
then ends the run FAILED with a ``failure_reason`` tag if rank 0 could not (its only MLflow write).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import REPO_ROOT, PipelineError, run_command
from pipeline.hardware import process_started

log = logging.getLogger(__name__)

LAUNCH_DIR_ENV = "PIPELINE_LAUNCH_DIR"  # set for the ranks: where job.yaml, run.json, result.json live


def wanted(hardware: DictConfig) -> bool:
    """True when this profile runs more than one process (and we are not already a rank)."""
    return int(hardware.get("num_processes", 1)) > 1 and not os.environ.get(LAUNCH_DIR_ENV)


def command(hardware: DictConfig, launch_dir: Path) -> list[str]:
    """The ``accelerate launch`` command line for this profile."""
    processes = int(hardware.num_processes)
    machines = int(hardware.get("num_machines") or 1)
    if machines > 1 and not hardware.get("main_process_ip"):
        raise PipelineError(
            f"hardware.num_machines={machines} needs hardware.main_process_ip: set it to machine 0's "
            "address on every machine (and hardware.machine_rank to each machine's index)."
        )
    port = hardware.get("main_process_port") or free_port()
    per_machine = max(processes // machines, 1)
    threads = hardware.get("num_threads") or max((os.cpu_count() or 1) // per_machine, 1)
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu",  # torch's elastic launcher; on CPU the ranks use gloo (ACCELERATE_USE_CPU)
        "--num_processes", str(processes),
        "--num_machines", str(machines),
        "--machine_rank", str(hardware.get("machine_rank") or 0),
        "--main_process_ip", str(hardware.get("main_process_ip") or "127.0.0.1"),
        "--main_process_port", str(port),
        "--num_cpu_threads_per_process", str(threads),
        "--mixed_precision", "no",  # the trainer's own bf16/fp16 flags decide (pipeline.hardware)
        "--dynamo_backend", "no",
        "--max_restarts", "0",  # a failed rank ends the job; no silent restart
        "--monitor_interval", "1",
        "-m", "pipeline.launch", str(launch_dir),
    ]


def run_launched(
    cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict[str, str],
    extra_tags: dict[str, str] | None = None, run_name: str | None = None,
):
    """Start the ranks on the resolved ``cfg``, wait for them, return rank 0's JobResult.

    Same arguments as :func:`pipeline.job.run_job`; every rank calls it with these.
    """
    from pipeline import tracking, validate
    from pipeline.job import JobResult

    validate.check_config(cfg)  # fail in seconds, before any process starts
    tracking.check_target(cfg.tracking)
    launch_dir = output_dir / "launch"
    launch_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("run.json", "result.json"):
        (launch_dir / stale).unlink(missing_ok=True)
    job = {
        "config": OmegaConf.to_container(cfg, resolve=True), "overrides": list(overrides), "choices": dict(choices),
        "extra_tags": dict(extra_tags or {}), "run_name": run_name,
    }
    OmegaConf.save(OmegaConf.create(job), launch_dir / "job.yaml")
    argv = command(cfg.hardware, launch_dir)
    env = {**os.environ, LAUNCH_DIR_ENV: str(launch_dir), "PYTHONPATH": _pythonpath(), "PIPELINE_STARTED_AT": str(process_started())}
    if cfg.hardware.accelerator == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    log.info("Launching %s ranks: %s", cfg.hardware.num_processes, " ".join(argv))
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env)
    try:
        code = process.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the ranks, rank 0 ends its run KILLED
        _stop(process)
        _end_run(cfg, launch_dir, "KILLED", "interrupted (Ctrl-C or SIGTERM)")
        raise
    if code != 0:
        reason = f"a rank failed (accelerate launch exited with status {code} after {time.monotonic() - started:.0f} s)"
        _end_run(cfg, launch_dir, "FAILED", reason)
        raise PipelineError(f"{reason}: the rank's error is printed above; the job's files are in {output_dir}.")
    result = json.loads((launch_dir / "result.json").read_text())
    return JobResult(**result)


def _pythonpath() -> str:
    """Ranks import this checkout's ``pipeline`` whatever their working directory."""
    return os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the elastic agent forwards it to every rank
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _end_run(cfg: DictConfig, launch_dir: Path, status: str, reason: str) -> None:
    """End rank 0's run with ``status``, the launcher's reason first and rank 0's own after it.

    Rank 0 may have ended the run itself (its collective failed when another rank died): what the
    launcher knows (a rank failed, the exit status) still leads the reason.
    """
    announced = launch_dir / "run.json"
    if not announced.is_file():
        return  # rank 0 failed before the run started (e.g. a data error): there is no run
    import mlflow

    run_id = json.loads(announced.read_text())["run_id"]
    client = mlflow.MlflowClient(str(cfg.tracking.uri))
    run = client.get_run(run_id)
    own = run.data.tags.get("failure_reason")
    client.set_tag(run_id, "failure_reason", f"{reason}; rank 0: {own}"[:5000] if own else reason)
    if run.info.status != status:
        client.set_terminated(run_id, status)


# ----------------------------------------------------------------------------------------------
# The rank side
# ----------------------------------------------------------------------------------------------


def announce_run(run_id: str) -> None:
    """Rank 0: record the run id for the launching process (no-op outside a launch)."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if folder:
        (Path(folder) / "run.json").write_text(json.dumps({"run_id": run_id}))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def rank_main(launch_dir: Path) -> int:
    """One rank: read the resolved config, run the job, rank 0 writes ``result.json``."""
    import dataclasses

    from pipeline.hardware import process_rank
    from pipeline.job import run_job

    rank = process_rank()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s",
    )
    signal.signal(signal.SIGTERM, _interrupt)
    job = OmegaConf.load(launch_dir / "job.yaml")
    try:
        result = run_job(job.config, launch_dir.parent, list(job.overrides), dict(job.choices),
                         extra_tags=dict(job.extra_tags), run_name=job.run_name)
    except PipelineError as error:
        print(f"error (rank {rank}): {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if rank == 0:
        (launch_dir / "result.json").write_text(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    run_command(lambda: rank_main(Path(sys.argv[1])))

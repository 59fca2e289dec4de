"""Several processes for one job: ``hardware.num_processes > 1`` starts ranks with ``accelerate launch``.

The Hydra process (a single run, or one job of a ``-m`` multirun) composes the config once and
writes it, resolved, to ``<output_dir>/launch-XXXX/job.yaml`` (a folder of its own, so jobs that share
an output folder never read each other's); ``accelerate launch`` (torch's elastic agent underneath)
starts the ranks with ``python -m pipeline.rank <that folder>``, and every rank reads that one file:
ranks never compose, so ``${now:}``-style values cannot differ between them. The file holds no secret:
values under secret-looking keys and URI passwords are ``***`` there (``pipeline.tracking.scrub``) and
reach the ranks in the ``PIPELINE_SECRETS`` environment variable, which :func:`read_job` puts back.

Rank 0 runs the job exactly as a single process does and owns the one MLflow run (world size,
per-device and global batch among its tags); the other ranks train and write nothing to MLflow.
Rank 0 records the run id in ``run.json`` of the launch folder as soon as the run starts (and in the
rendezvous store, where the other ranks read it: the job's folder is keyed by it) and the job's
result in ``result.json``.

Several machines (``hardware.num_machines > 1``): every machine runs the same command with its own
``hardware.machine_rank`` and its own output folder. Machine 0 hosts the rendezvous and global rank
0, so only its launcher reads ``result.json``; another machine first waits (at most
``hardware.join_timeout_s``) for machine 0's rendezvous port to answer, and its job is done when its
ranks exit 0; machine 0 waits as long for every machine to join the rendezvous. Before any rank reads
data, the ranks compare a digest of the resolved config (all but ``hardware.machine_rank``, paths
inside the checkout taken relative to it) through the rendezvous store: a machine started with
another config is refused on every machine, before any MLflow run exists.

A rank that fails or dies ends the job at once: the elastic agent stops the other ranks
(``max_restarts`` 0) and collectives time out after ``hardware.timeout_s``. The launching process
then ends the run FAILED with a ``failure_reason`` tag if rank 0 could not (its only MLflow write).
A rank that refuses the job (a user mistake) leaves its one-line reason in the launch folder; the
launching process reports that line alone, as a single process would (``pipeline.runtime.elastic``
keeps the agent's traceback out of the way).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import REPO_ROOT, PipelineError
from pipeline.runtime import process_clock
from pipeline.runtime.elastic import LAUNCH_DIR_ENV, refusal
from pipeline.tracking import client, config_secrets, end_run
from pipeline.tracking.scrub import hidden_values, redacted, scrub

log = logging.getLogger(__name__)

SECRETS_ENV = "PIPELINE_SECRETS"  # set for the ranks: the config's secret values (JSON), kept out of job.yaml


def wanted(hardware: DictConfig) -> bool:
    """True when this profile runs more than one process (and we are not already a rank)."""
    processes = hardware.num_processes  # not a whole number: the job's own checks refuse it (stages.settings.Hardware)
    return isinstance(processes, int) and processes > 1 and not os.environ.get(LAUNCH_DIR_ENV)


def command(hardware: DictConfig, launch_dir: Path) -> list[str]:
    """The ``accelerate launch`` command line for this profile."""
    processes = int(hardware.num_processes)
    machines = int(hardware.num_machines)  # with its main_process_ip: stages.settings.Hardware.rules
    port = hardware.main_process_port or free_port()
    per_machine = max(processes // machines, 1)
    threads = hardware.num_threads or max((os.cpu_count() or 1) // per_machine, 1)
    # every machine waits at most join_timeout_s in the rendezvous for the others (torch's default: 600 s)
    rendezvous = ["--rdzv_conf", f"timeout={int(join_timeout_s(hardware))}"] if machines > 1 else []
    return [
        sys.executable,
        "-m",
        "pipeline.runtime.elastic",  # accelerate launch, quiet about a rank's refusal (printed once, below)
        "--multi_gpu",  # torch's elastic launcher; on CPU the ranks use gloo (ACCELERATE_USE_CPU)
        "--num_processes",
        str(processes),
        "--num_machines",
        str(machines),
        "--machine_rank",
        str(hardware.machine_rank),
        "--main_process_ip",
        str(hardware.main_process_ip),
        "--main_process_port",
        str(port),
        "--num_cpu_threads_per_process",
        str(threads),
        "--mixed_precision",
        "no",  # the trainer's own bf16/fp16 flags decide (pipeline.runtime.hardware)
        "--dynamo_backend",
        "no",
        "--max_restarts",
        "0",  # a failed rank ends the job; no silent restart
        "--monitor_interval",
        "1",
        *rendezvous,
        "-m",
        "pipeline.rank",
        str(launch_dir),
    ]


def run_launched(cfg: DictConfig, output_dir: Path, job: dict) -> dict:
    """Start the ranks on the resolved ``cfg``, wait for them, return rank 0's result (a dict).

    ``job`` holds the rest of what every rank passes to ``run_job`` (overrides, choices, extra tags,
    run name); the caller has checked the config and the tracking target.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    launch_dir = Path(tempfile.mkdtemp(prefix="launch-", dir=output_dir))
    secrets = write_job(cfg, launch_dir, job)
    argv = command(cfg.hardware, launch_dir)
    machine = int(cfg.hardware.machine_rank)
    if machine > 0:
        wait_for_machine_0(cfg.hardware)
    env = {
        **os.environ,
        LAUNCH_DIR_ENV: str(launch_dir),
        "PYTHONPATH": _pythonpath(),
        process_clock.LAUNCHER_STARTED_ENV: str(process_clock.started()),
        SECRETS_ENV: secrets,
    }
    if cfg.hardware.accelerator == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    log.info("Launching %s ranks: %s", cfg.hardware.num_processes, " ".join(argv))
    started = time.monotonic()
    # own session: a terminal's Ctrl-C reaches this process only, which forwards one SIGTERM (_stop)
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, start_new_session=True)
    try:
        code = process.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the ranks, rank 0 ends its run KILLED
        _stop(process)
        _end_run(str(cfg.tracking.uri), launch_dir, "KILLED", "interrupted (Ctrl-C or SIGTERM)")
        raise
    if code != 0:
        waited = time.monotonic() - started
        reason = f"a rank failed (accelerate launch exited with status {code} after {waited:.0f} s)"
        refused = refusal(launch_dir)  # a rank refused the job (a user mistake): its reason is the whole message
        _end_run(str(cfg.tracking.uri), launch_dir, "FAILED", f"{reason}: {refused}" if refused else reason)
        if refused:
            raise PipelineError(refused)
        raise PipelineError(
            f"{reason}{_not_joined(cfg.hardware, launch_dir, waited)}: the rank's error is printed above; the job's files are in {launch_dir}."
        )
    if machine > 0:  # global rank 0 is on machine 0: its launcher has the run and the metrics
        return {"run_id": "", "experiment_id": "", "metrics": {}, "optimized_metric": None}
    return json.loads((launch_dir / "result.json").read_text())


def wait_for_machine_0(hardware: DictConfig) -> None:
    """Machine ``machine_rank > 0``: wait until machine 0's rendezvous port answers, at most
    ``hardware.join_timeout_s`` seconds, so a wrong address fails in bounded time with a clear error."""
    host, port = str(hardware.main_process_ip), int(hardware.main_process_port)
    limit = join_timeout_s(hardware)
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, limit)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise PipelineError(
                    f"machine 0 at {host}:{port} did not answer within {limit:.0f} s ({error}): start machine 0's "
                    "command, check hardware.main_process_ip / main_process_port and that the port is open "
                    "between the machines (hardware.join_timeout_s sets the wait)."
                ) from None
        time.sleep(1.0)


def _not_joined(hardware: DictConfig, launch_dir: Path, waited: float) -> str:
    """Machine 0 whose rendezvous timed out before rank 0 started a run: the likely cause, or ''."""
    machines, limit = int(hardware.num_machines), join_timeout_s(hardware)
    if int(hardware.machine_rank) or machines == 1 or (launch_dir / "run.json").is_file() or waited < limit:
        return ""
    return (
        f"; not all {machines} machines joined within hardware.join_timeout_s={limit:.0f} s: start the same "
        "command on every machine (only hardware.machine_rank differs), or raise the timeout"
    )


def join_timeout_s(hardware: DictConfig) -> float:
    """Seconds machines wait for each other: machine 0 in the rendezvous, the others for machine 0's port."""
    return float(hardware.join_timeout_s)


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
        except subprocess.TimeoutExpired:  # the agent and its ranks: their own process group
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _end_run(tracking_uri: str, launch_dir: Path, status: str, reason: str) -> None:
    """End rank 0's run with ``status``, the launcher's reason first and rank 0's own after it.

    Rank 0 may have ended the run itself (its collective failed when another rank died): what the
    launcher knows (a rank failed, the exit status) still leads the reason.
    """
    announced = launch_dir / "run.json"
    if not announced.is_file():
        return  # rank 0 failed before the run started (e.g. a data error): there is no run
    run_id = json.loads(announced.read_text())["run_id"]
    own = client(tracking_uri).get_run(run_id).data.tags.get("failure_reason")
    end_run(run_id, status, f"{reason}; rank 0: {own}" if own else reason, tracking_uri=tracking_uri)


# ----------------------------------------------------------------------------------------------
# The rank side
# ----------------------------------------------------------------------------------------------


def announce_run(run_id: str) -> None:
    """Rank 0: record the run id for the launching process and, in the rendezvous store, for the
    other ranks (no-op outside a launch)."""
    folder = os.environ.get(LAUNCH_DIR_ENV)
    if folder:
        (Path(folder) / "run.json").write_text(json.dumps({"run_id": run_id}))
        _rendezvous_store(read_job(Path(folder)).config.hardware).set(_key("run"), run_id)


def announced_run(hardware: DictConfig) -> str:
    """A rank other than 0: the run id rank 0 announced (waits for it at most ``hardware.timeout_s``)."""
    return _rendezvous_store(hardware).get(_key("run")).decode()


def _rendezvous_store(hardware: DictConfig):
    """The elastic agent's store (``MASTER_ADDR``/``MASTER_PORT``), shared by every rank of the job."""
    from datetime import timedelta

    from torch.distributed import TCPStore

    timeout = timedelta(seconds=int(hardware.timeout_s))
    return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)


def _key(name: str) -> str:
    """A key of this launch in the rendezvous store."""
    return f"pipeline/{name}/{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}"


def write_result(launch_dir: Path, result: dict) -> None:
    """Rank 0: the job's result, for the launching process."""
    (launch_dir / "result.json").write_text(json.dumps(result))


def write_job(cfg: DictConfig, launch_dir: Path, job: dict) -> str:
    """``job.yaml``: the resolved config and the job's arguments, every secret hidden; returns the
    secret values (JSON, dot key -> value) for the ranks' ``PIPELINE_SECRETS``."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    secrets = config_secrets(cfg, job.get("overrides") or [])
    arguments = OmegaConf.create(scrub(OmegaConf.to_yaml(OmegaConf.create(job)), secrets))
    OmegaConf.save(OmegaConf.create({"config": redacted(plain), **arguments}), launch_dir / "job.yaml")
    return json.dumps(hidden_values(plain))


def read_job(launch_dir: Path) -> DictConfig:
    """A rank: the resolved config and the job's arguments, as the launching process wrote them, with
    the secrets from ``PIPELINE_SECRETS`` put back."""
    job = OmegaConf.load(launch_dir / "job.yaml")
    for key, value in json.loads(os.environ.get(SECRETS_ENV) or "{}").items():
        OmegaConf.update(job.config, key, value, merge=False)
    return job


def config_digest(config: DictConfig) -> str:
    """SHA-256 of the resolved config, all but ``hardware.machine_rank`` (the one key machines differ in),
    with paths inside this checkout written relative to it: the same checkout at another path on
    another machine gives the same digest."""
    import hashlib

    plain = OmegaConf.to_container(config, resolve=True)
    plain["hardware"].pop("machine_rank", None)
    checkout = re.escape(json.dumps(str(REPO_ROOT))[1:-1]) + r'(?=[/"])'  # the folder itself, not a namesake
    text = re.sub(checkout, "<repo>", json.dumps(plain, sort_keys=True, default=str))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_config(digest: str, hardware: DictConfig) -> None:
    """A rank: publish this machine's config digest (:func:`config_digest`) in the rendezvous store and
    compare every rank's.

    Raises :class:`PipelineError` on every rank when one machine runs another config. Uses the
    elastic agent's store (``MASTER_ADDR``/``MASTER_PORT``), not the process group: nothing else changes.
    """
    from pipeline.runtime.hardware import process_rank, world_size

    store = _rendezvous_store(hardware)
    prefix = _key("config")
    machine = int(hardware.machine_rank)
    store.set(f"{prefix}/{process_rank()}", json.dumps({"machine": machine, "digest": digest}))
    seen = [json.loads(store.get(f"{prefix}/{rank}")) for rank in range(world_size())]
    odd = [entry for entry in seen if entry["digest"] != seen[0]["digest"]]
    if odd:
        raise PipelineError(
            f"machine {odd[0]['machine']} joined with config {odd[0]['digest']}, machine {seen[0]['machine']} runs "
            f"{seen[0]['digest']}: run the same command with the same overrides and checkout on every machine "
            "(only hardware.machine_rank differs)."
        )

"""A team's tracking server on a real PostgreSQL: Debian's ``postgresql`` (``make postgresql`` installs
it when missing), started on 127.0.0.1 as the ``postgres`` user, ``mlflow server`` over it with
proxied artifacts, a sweep on a cluster engine's code path and a promotion against it. The commands
are those of ``docs/tracking-server.md``.

The sweep runs through Hydra's submitit launcher: ``sweep=submitit_local`` starts each job as a process
of submitit's local executor, both at once (the path ``sweep=slurm`` takes through sbatch), and they log
to the server as cluster nodes would. ``sweep=slurm`` without sbatch is refused in one line.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline import REPO_ROOT
from pipeline.runtime.launch import free_port
from tests.conftest import all_runs, mlflow_server, module_in_process, pipeline_in_process


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        done = subprocess.run(["make", "-s", "postgresql"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.fail(f"`make postgresql` could not install PostgreSQL: {done.stderr[-2000:]}")
    return Path(found[-1]).parent


@contextmanager
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (database ``mlflow``); yields its URI."""
    pg_bin = _bin()
    folder = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))  # not under pytest's root-only tmp
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def pg(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, text=True, timeout=120)

    try:
        pg(str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust")
        options = f"-h 127.0.0.1 -p {port} -k {folder}"
        pg(str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "pg.log"), "-w", "start")
        try:
            pg(str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
            yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
        finally:
            pg(str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_submitit_sweep_and_promotion_on_a_postgresql_tracking_server(tmp_path, capfd):
    import mlflow
    import pandas as pd

    artifacts = tmp_path / "artifacts"
    with postgres() as database, mlflow_server(tmp_path / "server", database, artifacts=artifacts) as uri:
        args = ["-m", "sweep=submitit_local", "debug=smoke", "seed=1,2", "tracking.register_as=tiny-pg",
                f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.run.dir={tmp_path}/hydra"]  # fmt: skip
        out = pipeline_in_process(args, capfd)  # the sweep here; submitit starts each job's own process
        assert out.returncode == 0, out.stderr[-3000:]
        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        parent = next(r for r in runs if r.data.tags.get("pipeline.role") == "sweep")
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert parent.info.status == "FINISHED" and len(runs) == 3, "every other run is a child of the sweep"
        assert parent.data.tags["pipeline.launcher"] == "LocalLauncher", parent.data.tags
        # each job ran in its own process started by submitit (one folder each, named by its process id)
        assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2
        assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
        assert all(c.info.status == "FINISHED" for c in children)
        for child in children:  # nothing lost: every step, every final metric, every artifact
            assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1, 2]
            assert "sts-test_spearman_cosine" in child.data.metrics
            assert {"config.yaml", "eval"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
        # the leaderboard went through the server's proxied artifact store; seed is swept, so the one
        # configuration's seeds are folded into one row; runs.csv keeps one row per job
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
        board = pd.read_csv(client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path)))
        assert list(board["n"]) == [2]
        jobs = pd.read_csv(client.download_artifacts(parent.info.run_id, "runs.csv", str(tmp_path)))
        assert sorted(jobs["run_id"]) == sorted(c.info.run_id for c in children)
        assert list(artifacts.rglob(f"{parent.info.run_id}/artifacts/leaderboard.csv")), "not in the served store"
        assert len(client.search_model_versions("name = 'tiny-pg'")) == 2
        promoted = module_in_process("pipeline.promote", capfd, ["--parent", parent.info.run_id, "--tracking-uri", uri])
        assert promoted.returncode == 0, promoted.stderr[-3000:]
        best = max(children, key=lambda c: c.data.metrics["sts-dev_spearman_cosine"])
        assert client.get_model_version_by_alias("tiny-pg", "champion").tags["run_id"] == best.info.run_id
        mlflow.set_tracking_uri(uri)
        model = mlflow.sentence_transformers.load_model("models:/tiny-pg@champion")
        assert model.encode(["a team's champion"]).shape == (1, 32)


def test_slurm_sweep_without_sbatch_is_one_line(cli, mlflow_client, tmp_path, monkeypatch):
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not os.path.exists(f"{p}/sbatch"))
    monkeypatch.setenv("PATH", path)  # put back after the test
    out = cli("-m", "sweep=slurm", "debug=smoke", f"hydra.sweep.dir={tmp_path}/sweep", in_process=True)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "sbatch, which is not on the PATH" in out.stderr and "Traceback" not in out.stderr
    assert all_runs(mlflow_client) == []

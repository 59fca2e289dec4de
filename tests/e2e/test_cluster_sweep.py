"""Sweeps on a cluster engine: Hydra's submitit launcher. ``sweep=submitit_local`` runs each job as a
process started by submitit's local executor (the code path ``sweep=slurm`` takes through sbatch),
logging to a real ``mlflow server`` on loopback with proxied artifacts, as cluster nodes would."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest

from tests.conftest import all_runs


@pytest.mark.slow
def test_submitit_local_grid_reaches_one_parent_through_a_tracking_server(cli, tmp_path, tracking_server):
    import mlflow

    uri, served = tracking_server["uri"], tracking_server["folder"] / "artifacts"
    out = cli(
        "-m", "sweep=submitit_local", "debug=smoke", "tracking.log_model=false", "tracking.experiment_name=submitit_grid",
        "training.learning_rate=1e-5,1e-3", "seed=1,2", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/sweep",
        with_store=False, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("submitit_grid")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("pipeline.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1, "every other run of the experiment is a child of the sweep"
    assert parent.info.status == "FINISHED" and parent.data.tags["pipeline.launcher"] == "LocalLauncher"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert all(math.isfinite(c.data.metrics["sts-dev_spearman_cosine"]) for c in children)
    # each job ran in its own process started by submitit (one folder each, named by its process id)
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 4
    # the leaderboard went through the server's proxied artifact store
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    # seed is swept: the leaderboard folds each learning rate's seeds; runs.csv keeps one row per job
    board = pd.read_csv(client.download_artifacts(parent.info.run_id, "leaderboard.csv"))
    assert sorted(board["training.learning_rate"]) == [1e-5, 1e-3] and set(board["n"]) == {2}
    runs = pd.read_csv(client.download_artifacts(parent.info.run_id, "runs.csv"))
    assert sorted(runs["run_id"]) == sorted(c.info.run_id for c in children)
    assert list(served.rglob(f"{parent.info.run_id}/artifacts/leaderboard.csv")), "not in the served artifact store"


def test_slurm_sweep_without_sbatch_is_one_line(cli, mlflow_client, tmp_path):
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not os.path.exists(f"{p}/sbatch"))
    out = cli("-m", "sweep=slurm", "debug=smoke", f"hydra.sweep.dir={tmp_path}/sweep", env={"PATH": path})
    assert out.returncode == 2, out.stderr[-3000:]
    assert "sbatch, which is not on the PATH" in out.stderr and "Traceback" not in out.stderr
    assert all_runs(mlflow_client) == []

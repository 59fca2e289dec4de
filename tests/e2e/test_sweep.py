"""Hydra multirun sweeps on the tiny model: one parent MLflow run per sweep, one child per job.

Each sweep runs ``python -m pipeline -m ...`` in a subprocess against the test's SQLite store, as a
user would; the basic launcher runs its jobs in that process, the joblib launcher in workers.
"""

from __future__ import annotations

import io
import itertools
import math
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import Spawned, all_runs, spawn

SMOKE = ("debug=smoke", "tracking.log_model=false")


def sweep_args(tmp_path, *overrides: str) -> list[str]:
    return ["-m", *SMOKE, *overrides, f"hydra.sweep.dir={tmp_path}/sweep"]


def parent_and_children(client):
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("pipeline.role") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1, "every other run is a child of the sweep"
    return parents[0], children


def artifact_names(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.slow
def test_four_job_sweep_makes_one_parent_four_children_and_a_leaderboard(cli, mlflow_client, tmp_path, store):
    out = cli(*sweep_args(tmp_path, "training.learning_rate=1e-5,1e-3", "seed=1,2"), in_process=True)
    assert out.returncode == 0, out.stderr[-3000:]
    parent, children = parent_and_children(mlflow_client)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    # one experiment, created once, up front; nothing in Default
    experiments = {r.info.experiment_id for r in [parent, *children]}
    assert len(experiments) == 1 and "0" not in experiments
    # the swept values are params, and the run names say them
    combos = {(c.data.params["training.learning_rate"], c.data.params["seed"]) for c in children}
    assert combos == set(itertools.product(["1e-05", "0.001"], ["1", "2"]))
    for child in children:
        name = child.data.tags["mlflow.runName"]
        assert f"seed={child.data.params['seed']}" in name and "training.learning_rate=" in name, name
        assert child.data.tags["pipeline.sweep_id"] == parent.data.tags["pipeline.sweep_id"]
        assert child.data.params.keys() == children[0].data.params.keys()
        assert math.isfinite(child.data.metrics["sts-dev_spearman_cosine"])
    assert parent.data.params["sweep.seed"] == "1,2"
    # the parent's leaderboard ranks the four children by the optimized metric, best first
    assert {"leaderboard.csv", "leaderboard.md", "comparison.png", "overrides.yaml"} <= artifact_names(
        mlflow_client, parent.info.run_id
    )
    board = pd.read_csv(mlflow_client.download_artifacts(parent.info.run_id, "runs.csv"))
    assert sorted(board["run_id"]) == sorted(c.info.run_id for c in children)
    assert list(board["sts-dev_spearman_cosine"]) == sorted(board["sts-dev_spearman_cosine"], reverse=True)
    assert (
        parent.data.metrics["sweep.jobs"] == 4
        and parent.data.metrics["sweep.best"] == board["sts-dev_spearman_cosine"].max()
    )
    # seed is swept: the leaderboard folds the seeds of each learning rate into one row, ranked by the mean
    folded = pd.read_csv(mlflow_client.download_artifacts(parent.info.run_id, "leaderboard.csv"))
    assert len(folded) == 2 and list(folded["n"]) == [2, 2] and "seed" not in folded.columns
    means = [
        board[board["training.learning_rate"] == lr]["sts-dev_spearman_cosine"]
        for lr in folded["training.learning_rate"]
    ]
    assert list(folded["sts-dev_spearman_cosine"]) == pytest.approx([m.mean() for m in means])
    assert list(folded["sts-dev_spearman_cosine_std"]) == pytest.approx([m.std() for m in means])
    assert list(folded["sts-dev_spearman_cosine"]) == sorted(folded["sts-dev_spearman_cosine"], reverse=True)
    # each configuration against the best: its difference, the two-level bootstrap interval, tied or not;
    # as a forest plot on the parent and in the closing lines
    assert list(folded["tied"])[0] == "best" and list(folded["tied"])[1] in ("tied", "no")
    assert (folded.loc[0, "ci_low"], folded.loc[0, "ci_high"]) == (0, 0)
    gap = folded.loc[1, "sts-dev_spearman_cosine"] - folded.loc[0, "sts-dev_spearman_cosine"]
    assert folded.loc[1, "sts-dev_spearman_cosine vs best"] == pytest.approx(gap)
    assert folded.loc[1, "ci_low"] <= folded.loc[1, "ci_high"]
    # the change from the baseline too: its interval over seeds and items, beside the mean change
    assert list(folded.columns).index("delta_ci_low") == list(folded.columns).index("sts-dev_spearman_cosine delta") + 1
    assert (folded["delta_ci_low"] <= folded["delta_ci_high"]).all()
    assert "intervals.png" in artifact_names(mlflow_client, parent.info.run_id)
    assert "vs the best on sts-dev_spearman_cosine" in out.stdout and folded.loc[1, "run"] in out.stdout
    # MLflow's compare page for the four children, printed and kept on the parent
    url = parent.data.tags["pipeline.compare_url"]
    assert url in out.stdout and all(c.info.run_id in url for c in children)
    # compare: one row per child, the differing params as columns
    table = cli(
        "--parent",
        parent.info.run_id,
        "--tracking-uri",
        store["uri"],
        "--format",
        "csv",
        "--plot",
        str(tmp_path / "cmp.png"),
        module="pipeline.compare",
        in_process=True,
    )
    assert table.returncode == 0, table.stderr[-3000:]
    rows = pd.read_csv(io.StringIO(table.stdout))
    assert len(rows) == 4 and {"training.learning_rate", "seed", "sts-test_spearman_cosine"} <= set(rows.columns)
    assert "model.name_or_path" not in rows.columns  # the same in every run
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    assert url in table.stderr
    grouped = cli("--parent", parent.info.run_id, "--tracking-uri", store["uri"], "--format", "csv", "--group-by", "seed",
                  "--resamples", "2000", module="pipeline.compare", in_process=True)  # fmt: skip
    assert grouped.returncode == 0, grouped.stderr[-3000:]
    assert pd.read_csv(io.StringIO(grouped.stdout)).equals(folded)
    bogus = cli("--parent", parent.info.run_id, "--tracking-uri", store["uri"], "--group-by", "loss.scale",
                module="pipeline.compare", in_process=True)  # fmt: skip
    assert bogus.returncode == 2 and "--group-by loss.scale" in bogus.stderr and "Traceback" not in bogus.stderr


@pytest.mark.slow
def test_a_failed_job_is_a_failed_child_and_the_sweep_goes_on(cli, mlflow_client, tmp_path):
    out = cli(*sweep_args(tmp_path, "training.lr_scheduler_type=bogus,linear"), in_process=True)
    assert out.returncode == 1
    assert "1 of 2 jobs FAILED" in out.stderr and "Traceback" not in out.stderr
    parent, children = parent_and_children(mlflow_client)
    by_value = {c.data.params["training.lr_scheduler_type"]: c for c in children}
    assert by_value["bogus"].info.status == "FAILED"
    assert "bogus" in by_value["bogus"].data.tags["failure_reason"]
    assert by_value["linear"].info.status == "FINISHED"  # ran after the failure
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep.failed"] == 1
    assert "leaderboard.csv" in artifact_names(mlflow_client, parent.info.run_id)


@pytest.mark.slow
def test_an_optuna_sweep_optimises_the_configured_metric_and_the_same_sweep_again_continues_its_study(
    cli, mlflow_client, tmp_path
):
    import optuna
    from omegaconf import OmegaConf
    from optuna.distributions import FloatDistribution

    out = cli(*sweep_args(tmp_path, "sweep=optuna_lr", "hydra.sweeper.n_trials=2"), in_process=True)
    assert out.returncode == 0, out.stderr[-3000:]
    parent, children = parent_and_children(mlflow_client)
    assert parent.data.tags["pipeline.sweeper"] == "OptunaSweeper"
    assert parent.data.params["sweep.training.learning_rate"].startswith("tag(log")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    best = max(c.data.metrics["sts-dev_spearman_cosine"] for c in children)
    assert parent.data.metrics["sweep.best"] == best
    # Optuna's own record of the study agrees with MLflow's
    assert OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml").best_value == best

    out = cli(*sweep_args(tmp_path, "sweep=optuna_lr", "hydra.sweeper.n_trials=1"), in_process=True)  # again
    assert out.returncode == 0, out.stderr[-3000:]
    parents = sorted(
        (r for r in all_runs(mlflow_client) if r.data.tags.get("pipeline.role") == "sweep"),
        key=lambda r: r.info.start_time,
    )
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    first, second = (p.data.tags for p in parents)
    # one study, in optuna.db beside the MLflow store, under one name: the second run added to it
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert first["optuna.storage"] == second["optuna.storage"] == storage
    assert first["optuna.study_name"] == second["optuna.study_name"]
    study = optuna.load_study(study_name=second["optuna.study_name"], storage=storage)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    # trial N is proposed by the sampler seeded with seed + N (42 + N), in the first sweep and after the
    # resume alike: the same sweep proposes the same trials, and the resumed one new values
    space = {
        "training.learning_rate": FloatDistribution(1e-6, 1e-3, log=True),
        "training.warmup_steps": FloatDistribution(0.0, 0.3),
    }
    jobs = [r for r in all_runs(mlflow_client) if r.data.tags.get("pipeline.role") != "sweep"]
    ran = sorted(tuple(float(job.data.params[key]) for key in space) for job in jobs)
    assert ran == sorted(tuple(trial.params[key] for key in space) for trial in study.trials)  # as proposed
    for trial in study.trials:
        proposed = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=42 + trial.number)).ask(space)
        assert trial.params == proposed.params, trial.number
    rates = [t.params["training.learning_rate"] for t in study.trials]
    assert len(set(rates)) == 3
    (resumed,) = [r for r in jobs if r.data.tags.get("mlflow.parentRunId") == parents[1].info.run_id]
    assert float(resumed.data.params["training.learning_rate"]) == rates[2]
    # the parents are linked through the study, and the second holds the plots of all three trials
    assert "optuna.previous_parent" not in first
    assert second["optuna.previous_parent"] == parents[0].info.run_id
    assert study.user_attrs["mlflow_parent_run_id"] == parents[1].info.run_id
    plots = {"optimization_history.png", "param_importances.png"}
    assert plots <= artifact_names(mlflow_client, parents[1].info.run_id)
    for name in plots:
        png = Path(mlflow_client.download_artifacts(parents[1].info.run_id, name, str(tmp_path)))
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000


@pytest.mark.slow
def test_optuna_needs_the_optimized_metric(cli, mlflow_client, tmp_path):
    out = cli(
        *sweep_args(tmp_path, "sweep=optuna_lr", "hydra.sweeper.n_trials=1", "optimized_metric=null"), in_process=True
    )
    assert out.returncode == 2 and "optimized_metric" in out.stderr and "Traceback" not in out.stderr
    assert all_runs(mlflow_client) == []  # refused before any run
    out = cli(
        *sweep_args(tmp_path, "sweep=optuna_lr", "hydra.sweeper.n_trials=1", "optimized_metric=sts-dev_nothing"),
        in_process=True,
    )
    assert out.returncode != 0
    parent, children = parent_and_children(mlflow_client)
    assert [c.info.status for c in children] == ["FAILED"]
    assert (
        "optimized_metric='sts-dev_nothing' is not logged by the evaluators" in children[0].data.tags["failure_reason"]
    )
    assert parent.info.status == "FAILED"


@pytest.mark.timed
@pytest.mark.slow
def test_interrupted_sweep_leaves_no_run_running(mlflow_client, store_overrides, tmp_path):
    command = [
        sys.executable,
        "-m",
        "pipeline",
        *sweep_args(tmp_path, "seed=1,2", "training.max_steps=200"),
        *store_overrides,
    ]
    sweep = spawn(command, tmp_path / "sweep.log")
    try:
        deadline = time.monotonic() + 240
        while not any(
            r.info.status == "RUNNING" and r.data.tags.get("pipeline.role") == "job" for r in _runs(mlflow_client)
        ):
            assert sweep.poll() is None and time.monotonic() < deadline, "no job started"
            time.sleep(1)
        time.sleep(2)
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=120) == 130
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    parent, children = parent_and_children(mlflow_client)
    assert parent.info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"]


def _runs(client):
    try:
        return all_runs(client)
    except Exception:  # noqa: BLE001 - the store's tables may not exist yet
        return []


@pytest.mark.slow
@pytest.mark.new_store
def test_parallel_sweep_into_a_fresh_sqlite_store_loses_nothing(cli, mlflow_client, tmp_path, store):
    out = cli(*sweep_args(tmp_path, "sweep=parallel", "seed=1,2"))
    assert out.returncode == 0, out.stderr[-3000:]
    parent, children = parent_and_children(mlflow_client)
    assert parent.data.tags["pipeline.launcher"] == "JoblibLauncher"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert [e.name for e in mlflow_client.search_experiments()] in (["example", "Default"], ["Default", "example"])
    assert {c.data.params["seed"] for c in children} == {"1", "2"}
    from pipeline import threads_per_job

    # each worker's job resolved this machine's cores split between the 2 jobs at once
    assert {c.data.params["hardware.num_threads"] for c in children} == {str(threads_per_job(2))}
    for child in children:
        assert len(child.data.params) == len(children[0].data.params)
        assert [m.step for m in mlflow_client.get_metric_history(child.info.run_id, "loss")] == [1, 2]
        for name in ("sts-dev_spearman_cosine", "sts-test_spearman_cosine", "job_seconds"):
            assert math.isfinite(child.data.metrics[name]), name
        assert {"config.yaml", "overrides.yaml", "eval"} <= artifact_names(mlflow_client, child.info.run_id)


def _start_parallel_sweep(tmp_path, store_overrides, mlflow_client) -> Spawned:
    """A joblib sweep of 2 long jobs; returns the process once both children are RUNNING."""
    args = sweep_args(tmp_path, "sweep=parallel", "seed=1,2", "training.max_steps=400")
    sweep = spawn([sys.executable, "-m", "pipeline", *args, *store_overrides], tmp_path / "sweep.log")
    deadline = time.monotonic() + 300
    while (
        len(
            [
                r
                for r in _runs(mlflow_client)
                if r.info.status == "RUNNING" and r.data.tags.get("pipeline.role") == "job"
            ]
        )
        < 2
    ):
        assert sweep.poll() is None and time.monotonic() < deadline, f"the jobs did not start: {sweep.output()[-3000:]}"
        time.sleep(1)
    time.sleep(2)
    return sweep


def _joblib_workers(sweep: Spawned) -> list:
    """The processes that run the jobs (loky's workers, not its resource tracker)."""
    import psutil

    return [
        p
        for p in psutil.Process(sweep.pid).children(recursive=True)
        if "loky" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())
    ]


@pytest.mark.timed
@pytest.mark.slow
def test_a_joblib_worker_killed_mid_job_fails_the_sweep_in_one_line_and_leaves_no_run_running(
    tmp_path, store_overrides, mlflow_client
):
    with _start_parallel_sweep(tmp_path, store_overrides, mlflow_client) as sweep:
        workers = _joblib_workers(sweep)
        assert len(workers) == 2, "joblib runs the 2 jobs in 2 worker processes"
        workers[0].kill()  # as the OS's out-of-memory killer would
        output = sweep.finish(timeout=120)
    assert sweep.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    line = errors[0]
    assert "a worker process of the sweep died mid-job (exit code {SIGKILL(-9)}" in line, line
    parent, children = parent_and_children(mlflow_client)
    assert parent.info.status == "FAILED" and "worker process" in parent.data.tags["failure_reason"]
    statuses = [(c.info.status, c.data.tags.get("failure_reason")) for c in children]
    assert len(children) == 2 and all(c.info.status == "FAILED" for c in children), statuses
    assert all("process died" in c.data.tags["failure_reason"] for c in children), statuses


@pytest.mark.timed
@pytest.mark.slow
def test_ctrl_c_of_a_joblib_sweep_ends_the_parent_and_both_running_jobs_killed(
    tmp_path, store_overrides, mlflow_client
):
    with _start_parallel_sweep(tmp_path, store_overrides, mlflow_client) as sweep:
        sweep.send_signal(signal.SIGINT)  # Ctrl-C in the sweep's own process
        output = sweep.finish(timeout=120)
    assert sweep.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    parent, children = parent_and_children(mlflow_client)
    assert parent.info.status == "KILLED"
    statuses = [(c.info.status, c.data.tags.get("failure_reason")) for c in children]
    assert len(children) == 2 and all(c.info.status == "KILLED" for c in children), statuses
    assert all(c.data.tags.get("failure_reason") for c in children), statuses


@pytest.mark.new_store
def test_an_optuna_storage_that_cannot_be_opened_is_one_line_before_any_job(cli, store, tmp_path):
    out = cli(*sweep_args(tmp_path, "sweep=optuna_lr", "hydra.sweeper.n_trials=1",
                          "hydra.sweeper.storage=postgresql://team:s3cret@127.0.0.1:1/optuna"), in_process=True)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    line = next(line for line in out.stderr.splitlines() if line.startswith("error:"))
    assert "hydra.sweeper.storage='postgresql://***@127.0.0.1:1/optuna' cannot be opened" in line
    assert "s3cret" not in out.stderr and "job 0" not in out.stdout
    assert not (tmp_path / "mlflow.db").exists()  # refused before the MLflow store was touched

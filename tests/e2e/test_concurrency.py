"""Several processes writing into one fresh SQLite store at once: no run and no metric is lost. (Whole
pipeline jobs started at once into a new, then an existing store: tests/e2e/test_concurrent_jobs.py.)"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest

from pipeline import REPO_ROOT
from tests.conftest import all_runs

pytestmark = pytest.mark.new_store  # the writers meet a store that does not exist yet

PROCESSES = 4
STEPS = 150

# One writer: the pipeline's own experiment set-up and run (tracking.open_experiment / job_run),
# then the trainer-metrics callback (asynchronous logging) for STEPS steps, as a training job does.
WRITER = """
import sys
from omegaconf import OmegaConf
from pipeline import tracking
from pipeline.runtime.callbacks import MLflowMetrics
index, uri, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = OmegaConf.create({"tracking": {"uri": uri, "artifact_root": root, "experiment_name": "shared", "run_name": None,
                        "log_model": False, "system_metrics": False}, "training": {"learning_rate": 0.001 * (index + 1)}})
tracking.check_target(cfg.tracking)
experiment = tracking.open_experiment(cfg.tracking)
with tracking.job_run(cfg, experiment, f"writer-{index}", [f"index={index}"], {"writer": str(index)}):
    callback = MLflowMetrics()
    state = type("State", (), {"is_world_process_zero": True, "global_step": 0})()
    for step in range(1, STEPS + 1):
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": index + step / 1000, "grad_norm": 1.0})
""".replace("STEPS", str(STEPS))


@pytest.mark.slow
def test_parallel_writers_into_one_sqlite_store_lose_nothing(store, tmp_path, mlflow_client):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(i), store["uri"], store["artifact_root"]],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
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


LINEAGE_ROUNDS = 8


def _log_same_lineage(uri: str, barrier, rounds: int, failures) -> None:
    """One of several jobs of a sweep: every round, released with the others, it logs the same
    train / dev / test data into one experiment."""
    import datasets
    import mlflow

    from pipeline import tracking
    from pipeline.stages.splits import LoadedData, Split

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("shared")
    for round_ in range(rounds):
        rows = datasets.Dataset.from_dict(
            {"sentence1": [f"a {round_}", "b"], "sentence2": ["c", "d"], "score": [0.5, 1.0]}
        )
        data = LoadedData(
            train=Split(rows, "example/train.csv", "x"),
            eval_splits={name: Split(rows, f"example/{name}.csv", "x") for name in ("dev", "test")},
        )
        with mlflow.start_run():
            barrier.wait(timeout=120)
            try:
                tracking.log_data_lineage(data, f"round{round_}", f"round{round_}")
                tracking.log_mined_set(rows, "example/mined", f"round{round_}-mined", cached=False)
            except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the test
                failures.put(f"round {round_}: {error}"[:500])


@pytest.mark.slow
def test_concurrent_jobs_log_the_same_dataset_lineage(store, mlflow_client):
    """Jobs of one sweep logging the same data at the same moment race to insert the experiment's
    dataset row (the splits read, and a mined set two jobs share by its cache key); every job must still
    finish with its lineage linked, none may crash."""
    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(target=_log_same_lineage, args=(store["uri"], barrier, LINEAGE_ROUNDS, failures))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert not errors, errors
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    runs = all_runs(mlflow_client)
    assert len(runs) == PROCESSES * LINEAGE_ROUNDS
    for run in runs:
        inputs = run.inputs.dataset_inputs
        assert sorted(i.dataset.name.split("-", 1)[1] for i in inputs) == ["dev", "mined", "test", "train"]
        contexts = {
            i.dataset.name.split("-", 1)[1]: [t.value for t in i.tags if t.key == "mlflow.data.context"] for i in inputs
        }
        assert contexts == {"train": ["training"], "dev": ["evaluation"], "test": ["evaluation"], "mined": ["training"]}
        mined = next(i for i in inputs if i.dataset.name.endswith("-mined"))
        assert {t.key: t.value for t in mined.tags}["pipeline.mined"] == "true"
    names = {i.dataset.name for run in runs for i in run.inputs.dataset_inputs}
    assert len(names) == 4 * LINEAGE_ROUNDS  # one stored dataset per (name, digest), shared by every job

"""Jobs of one process (a sequential sweep: Hydra's basic launcher) load the starting model and read the
data once per key; each job still starts from the untrained weights (tags ``load.cache.model`` /
``load.cache.data``, metric ``job_seconds_to_first_step``)."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from pipeline import REPO_ROOT
from pipeline.stages import build, load
from tests.conftest import compose_config

TINY = ("model=tiny", "training.max_steps=2", "training.per_device_train_batch_size=4", "data.max_train_rows=16",
        "tracking.log_model=false", "training.learning_rate=1e-3")  # fmt: skip


@pytest.fixture
def data_dir(tmp_path):
    """The bundled example data, copied so that a test can change a row."""
    folder = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "pipeline" / "data" / "example", folder)
    return folder


@pytest.fixture
def empty_caches():
    """This test process's caches start empty (earlier tests of the worker may have filled them)."""
    build.MODELS.clear()
    load.DATA.clear()
    yield
    build.MODELS.clear()
    load.DATA.clear()


def loaded(run) -> tuple[str, str]:
    return run.data.tags["load.cache.model"], run.data.tags["load.cache.data"]


def lineage(run) -> dict:
    """The run's logged datasets by name."""
    return {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}


def final(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if name.startswith("sts-")}


@pytest.mark.slow
def test_jobs_of_one_process_load_once_per_key_and_each_starts_from_the_untrained_weights(
    run_job, mlflow_client, data_dir, empty_caches
):
    job = (*TINY, f"data.local_dir={data_dir}", "baseline_reuse=false")  # every job scores its own start
    first = run_job(*job)
    first_run = mlflow_client.get_run(first.run_id)
    assert first_run.info.status == "FINISHED" and loaded(first_run) == ("miss", "miss")
    # job 1 trained: its final scores are not those of its starting model
    assert first.metrics["sts-test_spearman_cosine"] != first.metrics["baseline/sts-test_spearman_cosine"]

    second = run_job(*job)
    second_run = mlflow_client.get_run(second.run_id)
    assert second_run.info.status == "FINISHED" and loaded(second_run) == ("hit", "hit")
    # job 2 started from the untrained weights (its own baseline equals job 1's) and trained to the same
    # numbers as job 1, which loaded everything itself: the rerun check holds for a job that reused
    assert {k: v for k, v in second.metrics.items() if k.startswith("baseline/")} == {
        k: v for k, v in first.metrics.items() if k.startswith("baseline/")
    }
    assert final(second.metrics) == final(first.metrics) and final(first.metrics)
    # the cached model is the untrained one: equal to a fresh load, after two jobs trained copies of it
    (pristine, _), = build.MODELS.entries.values()  # fmt: skip
    cfg = compose_config(list(job))
    fresh = build.load_model(cfg.model, cfg.seed).state_dict()
    assert all((pristine.state_dict()[name] == tensor).all() for name, tensor in fresh.items())

    # another key misses: a model setting (the data is the same), a changed file (the model is the same)
    shorter = mlflow_client.get_run(run_job(*job, "model.max_seq_length=32").run_id)
    assert loaded(shorter) == ("miss", "hit")
    test_csv = data_dir / "test.csv"
    test_csv.write_text(test_csv.read_text().replace("She locked the door behind her.", "She left the door open."))
    changed = run_job(*job)
    changed_run = mlflow_client.get_run(changed.run_id)
    assert loaded(changed_run) == ("hit", "miss")
    assert changed.metrics["sts-test_spearman_cosine"] != first.metrics["sts-test_spearman_cosine"]
    assert changed.metrics["sts-dev_spearman_cosine"] == first.metrics["sts-dev_spearman_cosine"]
    # dataset lineage follows the rows: the changed test split is a new dataset, the dev split the same one
    before, after = lineage(first_run), lineage(changed_run)
    assert json.loads(before["example-train"].profile)["num_rows"] == 16
    assert after["example-test"].digest != before["example-test"].digest
    assert after["example-dev"].digest == before["example-dev"].digest

    # a rewrite that keeps the size and the modification time (cp -p, rsync -a, tar): read again, neither the
    # process cache nor datasets' own cache serves the old rows; the job scores like one on a fresh copy
    dev_csv = data_dir / "dev.csv"
    before_rewrite = dev_csv.stat()
    text = dev_csv.read_text()
    dev_csv.write_text(
        text.replace("Elephants live in large family groups.,0.0", "Elephants live in large family groups.,4.9")
    )
    os.utime(dev_csv, ns=(before_rewrite.st_atime_ns, before_rewrite.st_mtime_ns))
    assert dev_csv.stat().st_size == before_rewrite.st_size and dev_csv.read_text() != text
    kept = run_job(*job)
    kept_run = mlflow_client.get_run(kept.run_id)
    copy = shutil.copytree(data_dir, data_dir.parent / "fresh-copy")
    fresh = run_job(*[o if not o.startswith("data.local_dir=") else f"data.local_dir={copy}" for o in job])
    assert loaded(kept_run)[1] == "miss"
    assert final(kept.metrics) == final(fresh.metrics) and final(kept.metrics) != final(changed.metrics)
    assert kept_run.data.tags["data.fingerprint"] == mlflow_client.get_run(fresh.run_id).data.tags["data.fingerprint"]
    assert kept_run.data.tags["data.fingerprint"] != changed_run.data.tags["data.fingerprint"]

    for run in (first_run, second_run, shorter, changed_run):
        seconds = mlflow_client.get_run(run.info.run_id).data.metrics["job_seconds_to_first_step"]
        assert math.isfinite(seconds) and 0 < seconds < run.data.metrics["job_seconds"]

"""The baseline cache: a starting model scored once per key, reused from the store by every later job."""

from __future__ import annotations

import math
import shutil

import pytest

from pipeline import REPO_ROOT

TINY = ("model=tiny", "training.max_steps=2", "training.per_device_train_batch_size=4", "data.max_train_rows=16",
        "tracking.log_model=false")  # fmt: skip


def baseline_of(run) -> dict[str, float]:
    return {name: value for name, value in run.data.metrics.items() if name.startswith("baseline/")}


@pytest.fixture
def data_dir(tmp_path):
    """The bundled example data, copied so that a test can change a row."""
    folder = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "pipeline" / "data" / "example", folder)
    return folder


def test_two_jobs_with_the_same_key_compute_the_baseline_once(run_job, mlflow_client, data_dir):
    job = (*TINY, f"data.local_dir={data_dir}")
    first = mlflow_client.get_run(run_job(*job).run_id)
    assert first.info.status == "FINISHED"
    tags = first.data.tags
    assert tags["baseline.cache"] == "miss" and tags["baseline.source"] == first.info.run_id
    computed = baseline_of(first)
    assert {"baseline/sts-dev_spearman_cosine", "baseline/sts-test_spearman_cosine"} <= set(computed)
    assert all(math.isfinite(v) for v in computed.values())

    result = run_job(*job, "training.learning_rate=1e-3")  # training settings are not part of the key
    second = mlflow_client.get_run(result.run_id)
    assert second.info.status == "FINISHED"
    assert second.data.tags["baseline.cache"] == "hit" and second.data.tags["baseline.source"] == first.info.run_id
    assert second.data.tags["baseline.key"] == tags["baseline.key"]
    assert baseline_of(second) == computed
    assert {k: v for k, v in result.metrics.items() if k.startswith("baseline/")} == computed

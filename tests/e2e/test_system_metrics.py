"""``tracking.system_metrics=true``: MLflow's system metrics logged for the run's lifetime (tiny model,
temporary SQLite store)."""

from __future__ import annotations

import math


def test_system_metrics_are_logged_while_the_run_is_open(run_job, mlflow_client):
    result = run_job("debug=smoke", "tracking.log_model=false", "tracking.system_metrics=true",
                     "tracking.system_metrics_interval=0.5")  # fmt: skip
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for name in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        history = mlflow_client.get_metric_history(result.run_id, name)
        assert history and all(math.isfinite(m.value) for m in history), name
        assert all(run.info.start_time <= m.timestamp <= run.info.end_time + 1000 for m in history), name
    assert mlflow_client.get_metric_history(result.run_id, "system/system_memory_usage_megabytes")[0].value > 0


def test_system_metrics_are_off_by_default(run_job, mlflow_client):
    result = run_job("debug=smoke", "tracking.log_model=false", "stages=[load,evaluate]")
    assert not [m for m in mlflow_client.get_run(result.run_id).data.metrics if m.startswith("system/")]

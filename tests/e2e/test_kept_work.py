"""What a job trained is not lost when the run fails after training."""

from __future__ import annotations

import pytest

from pipeline.stages.evaluate import NonFiniteMetricError
from tests.conftest import all_runs, logged_models


@pytest.mark.slow
def test_a_nan_final_metric_fails_the_run_and_still_logs_the_model(run_job, mlflow_client):
    # no guard, a learning rate that blows the weights up: the final evaluation is NaN
    with pytest.raises(NonFiniteMetricError, match="non-finite"):
        run_job("debug=smoke", "guard.enabled=false", "training.learning_rate=1e30", "+training.max_grad_norm=0")
    (run,) = all_runs(mlflow_client)
    assert run.info.status == "FAILED" and "NonFiniteMetricError" in run.data.tags["failure_reason"]
    (model,) = logged_models(mlflow_client, run)
    assert model.status.name == "READY"

"""The leakage audit in a job: metrics and the matches artifact in the run, one warning line, and training
goes on (``data.leakage=warn``). The refusal (``fail``) is a case of test_bad_input_battery.py; the audit
itself is tested on small frames in tests/unit/test_leakage.py."""

from __future__ import annotations

import logging
import shutil

import pandas as pd

from pipeline.stages.smoke import EXAMPLE_DIR

TINY = ("model=tiny", "training.max_steps=1", "training.per_device_train_batch_size=4", "baseline=false")


def test_a_leaking_test_pair_is_logged_warned_once_and_trained_on(tmp_path, run_job, mlflow_client, caplog):
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE_DIR, data)
    test = pd.read_csv(data / "test.csv")
    train = pd.read_csv(data / "train.csv")
    planted = pd.DataFrame({"anchor": [test.sentence2[1].upper()], "positive": [test.sentence1[1] + "!!"]})
    pd.concat([train, planted]).to_csv(data / "train.csv", index=False)  # test row 1, swapped, in train
    with caplog.at_level(logging.WARNING, logger="pipeline.job"):
        result = run_job(*TINY, f"data.local_dir={data}")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and "job_seconds_to_first_step" in run.data.metrics  # it trained
    metrics = run.data.metrics
    assert metrics["leakage/test_rows_exact"] == 1 and metrics["leakage/test_texts"] == 1
    assert metrics["leakage/dev_rows_exact"] == 0 and "leakage/train_rows_dropped" not in metrics
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Leakage")]
    assert len(warned) == 1 and "test: 1 exact" in warned[0] and "\n" not in warned[0]
    listed = pd.read_parquet(mlflow_client.download_artifacts(result.run_id, "leakage/test.parquet"))
    exact = listed[listed.kind == "exact"]
    assert exact[["split_row", "train_row"]].values.tolist() == [[1, len(train)]]
    assert test.sentence1[1].lower().rstrip(".") in exact.train_text.iloc[0]

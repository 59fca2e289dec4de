"""A typo in an experiment file, as a user meets it: ``python -m pipeline experiment=mine debug=smoke``
exits 2 with one line naming the file, the key and the nearest valid key, and creates no MLflow run; so
does the same typo as an override. A run logged with a key that is no longer known, or without one added
since, still replays, with a warning naming each."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from tests.conftest import pipeline_in_process
from tests.unit.test_closed_nodes import EXPERIMENT_TYPO, conf_copy


@pytest.mark.slow
def test_an_experiment_file_with_a_typo_is_refused_before_any_run(tmp_path, capfd):
    conf = conf_copy(tmp_path, {"experiment/mine.yaml": EXPERIMENT_TYPO})
    store = tmp_path / "mlruns"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--config-path",
            str(conf),
            "experiment=mine",
            "debug=smoke",
            f"tracking.uri=sqlite:///{store}/mlflow.db",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        cwd=tmp_path,  # as a user in their own project folder: conf/experiment/mine.yaml
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: conf/experiment/mine.yaml: unknown key 'early_stoping' (did you mean 'early_stopping'?)"
    ]
    assert not store.exists()  # no store, so no MLflow run: refused before the tracking target is touched
    # The same typo as an override: Hydra refuses it (struct mode); the message says what was meant.
    out = pipeline_in_process(["guard.chance_patiense=5", f"tracking.uri=sqlite:///{store}/mlflow.db"], capfd)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: command line: unknown key 'guard.chance_patiense' (did you mean 'chance_patience'?)"
    ]
    assert not store.exists()


@pytest.mark.slow
def test_a_run_logged_with_a_key_no_longer_known_replays_with_a_warning(run_job, store, mlflow_client, caplog):
    from omegaconf import OmegaConf

    from pipeline import logged_config, rerun, tracking

    original = run_job("debug=smoke", "tracking.log_model=false", "stages=[load,evaluate]")
    logged = OmegaConf.create(tracking.artifact_text(mlflow_client, original.run_id, "config.yaml"))
    logged.guard.retired_check = 3  # what an older version of the pipeline might have logged
    del logged.hardware.join_timeout_s  # ... and lacked: a key added since
    del logged.early_stopping
    mlflow_client.log_text(original.run_id, OmegaConf.to_yaml(logged), "config.yaml")
    with caplog.at_level(logging.WARNING, logger=logged_config.__name__):
        code = rerun.main([original.run_id, "--tracking-uri", store["uri"], "hardware.timeout_s=60"])
    assert code == 0
    assert [r.getMessage() for r in caplog.records if r.name == logged_config.__name__] == [
        f"config.yaml of run {original.run_id}: key 'guard.retired_check' is no longer a config key: ignored",
        f"config.yaml of run {original.run_id}: key 'hardware.join_timeout_s' was not logged: today's default 300 used",
        f"config.yaml of run {original.run_id}: key 'early_stopping' was not logged: today's default "
        "{'patience': None, 'threshold': 0.0} used",
    ]


def test_a_sweep_with_a_typo_is_refused_before_its_parent_run(tmp_path, capfd, monkeypatch):
    """``-m``: a typo in a swept experiment file (a basic sweep's or an Optuna search space's), in a
    swept key, or a swept option that is no file of its group, would fail every job (or the sweep after
    its first); the sweep refuses it in one line before it creates the store, the experiment or the
    parent run."""
    conf = conf_copy(tmp_path, {"experiment/mine.yaml": EXPERIMENT_TYPO})
    store = tmp_path / "mlruns"
    base = ["--config-path", str(conf), "-m", "debug=smoke"]
    base += [f"tracking.uri=sqlite:///{store}/mlflow.db", f"hydra.sweep.dir={tmp_path}/sweep"]
    monkeypatch.chdir(tmp_path)  # as a user in their own project folder: conf/experiment/mine.yaml
    typo = "error: conf/experiment/mine.yaml: unknown key 'early_stoping' (did you mean 'early_stopping'?)"
    no_option = (
        "error: command line: the sweep's option 'cosnet' is no file of group 'loss' (nearest: 'cosent'; every "
        "option: cached_gist, cached_mnrl, cosent, gist, mnrl, triplet): fix the option."
    )
    cases = {
        ("experiment=allnli,mine",): typo,
        ("sweep=optuna_lr", "hydra.sweeper.n_trials=1", '+hydra.sweeper.params.experiment="choice(allnli,mine)"'): typo,
        ("training.lerning_rate=1e-5,1e-4",): "error: command line: unknown key 'training.lerning_rate' (did you "
        "mean 'learning_rate'?): not a SentenceTransformerTrainingArguments field",
        ("loss=mnrl,cosnet",): no_option,
        ("sweep=optuna_lr", "hydra.sweeper.n_trials=1", '+hydra.sweeper.params.loss="choice(mnrl,cosnet)"'): no_option,
    }
    for overrides, message in cases.items():
        out = pipeline_in_process([*base, *overrides], capfd)  # refused before any job: no new interpreter
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip().splitlines() == [message]
        assert not store.exists()  # no store: no parent run, no child

"""Sweep configs compose, the MLflow sweep callback is wired in, and neither imports anything heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline import CONF_DIR, REPO_ROOT
from tests.conftest import compose_config

SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("option", SWEEPS)
def test_every_sweep_option_composes_with_the_callback(option):
    cfg = compose_config([f"sweep={option}", "debug=smoke"], hydra=True)
    assert cfg.hydra.callbacks.mlflow_sweep._target_ == "pipeline.sweep.MLflowSweep"
    assert cfg.model.name_or_path == "tiny-bert"  # debug still applies over a sweep


def test_optuna_sweep_maximises_over_training_keys():
    from pipeline.sweep import _check_sweeper
    from pipeline.tracking.sweep import swept_keys

    cfg = compose_config(["sweep=optuna_lr"], hydra=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction is None
    assert _check_sweeper(cfg) == (True, "maximize")  # null: the direction of sts-dev_spearman_cosine
    keys = swept_keys(cfg.hydra)
    assert keys == ["training.learning_rate", "training.warmup_steps"]
    plain = compose_config([])
    assert all(OmegaConf.select(plain, key) is not None for key in keys)  # the search space names real keys


def test_parallel_sweep_uses_joblib_with_two_jobs():
    cfg = compose_config(["sweep=parallel"], hydra=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_sweep_callback_import_is_cheap():
    code = "import sys, pipeline.sweep, pipeline.tracking.sweep, pipeline.compare, pipeline.rerun; assert not {'torch', 'mlflow'} & set(sys.modules), 'heavy import'"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_parallel_sweep_splits_the_cores_between_its_jobs():
    from pipeline import threads_per_job

    assert [threads_per_job(2, cores=n) for n in (1, 2, 3, 16)] == [1, 1, 1, 8]
    assert threads_per_job(4, cores=16) == 4 and threads_per_job("2", cores=16) == 8
    assert threads_per_job(-1, cores=16) == 1 and threads_per_job(-2, cores=16) == 1  # joblib: all cores
    assert threads_per_job(-9, cores=16) == 2  # joblib: 16 + 1 - 9 = 8 jobs
    cores = threads_per_job(1)  # this machine's
    assert job_threads(["sweep=parallel"]) == max(1, cores // 2)
    assert job_threads(["sweep=parallel", "hydra.launcher.n_jobs=1"]) == cores
    assert job_threads(["sweep=parallel", "hardware.num_threads=3"]) == 3  # the user's choice wins


def job_threads(overrides: list[str]) -> int:
    """``hardware.num_threads`` as a job of the sweep resolves it (Hydra sets its config for the job)."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_config(overrides, hydra=True)
    HydraConfig.instance().set_config(cfg)
    try:
        return cfg.hardware.num_threads
    finally:
        HydraConfig.instance().cfg = None

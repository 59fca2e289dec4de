"""A SQLite store keeps its artifacts beside its database unless ``tracking.artifact_root`` says otherwise."""

from __future__ import annotations

from pathlib import Path

from pipeline import REPO_ROOT
from pipeline.tracking.store import open_experiment
from tests.conftest import compose_config


def test_a_sqlite_store_elsewhere_gets_its_own_artifact_folder(tmp_path):
    import mlflow

    tracking = compose_config([f"tracking.uri=sqlite:///{tmp_path}/store/mlflow.db"]).tracking
    assert tracking.artifact_root == str(tmp_path / "store" / "artifacts")
    experiment = mlflow.MlflowClient(tracking.uri).get_experiment(open_experiment(tracking))
    assert experiment.artifact_location == (tmp_path / "store" / "artifacts" / "example").as_uri()


def test_the_default_store_and_an_explicit_root_keep_theirs(tmp_path):
    assert compose_config([]).tracking.artifact_root == str(REPO_ROOT / "mlruns" / "artifacts")
    chosen = compose_config([f"tracking.uri=sqlite:///{tmp_path}/a.db", f"tracking.artifact_root={tmp_path}/x"])
    assert Path(chosen.tracking.artifact_root) == tmp_path / "x"
    assert compose_config(["tracking.uri=http://127.0.0.1:5000"]).tracking.artifact_root is None

"""The pipeline against a real ``mlflow server`` over HTTP, a server that is down, and planted secrets.

The server runs on 127.0.0.1 on a free port with a SQLite backend and served artifacts (the
model is uploaded through the server); it is stopped in teardown.
"""

from __future__ import annotations

import math
import time

import pytest

from tests.conftest import all_runs, free_port, logged_models

SMOKE = ("debug=smoke",)


@pytest.fixture
def server(tracking_server):
    """The session's ``mlflow server`` (``tests/conftest.py``): each test here writes its own experiment."""
    return tracking_server


def _client(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


@pytest.mark.slow
def test_smoke_job_through_the_server(server, cli):
    out = cli(
        *SMOKE, f"tracking.uri={server['uri']}", "tracking.experiment_name=over_http", with_store=False, in_process=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = _client(server["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("over_http").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.max_steps"] == "2"
    assert math.isfinite(run.data.metrics["sts-test_spearman_cosine"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    # artifacts went through the server into its --artifacts-destination, the model included
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = {p.name for p in (server["folder"] / "artifacts").rglob("*") if p.is_file()}
    assert {"config.yaml", "model_card.md", "MLmodel", "model.safetensors"} <= stored
    (model,) = logged_models(client, run)
    import mlflow

    loaded = mlflow.sentence_transformers.load_model(model.model_uri)
    assert loaded.encode(["a sentence"]).shape == (1, 32)


def test_a_down_server_fails_fast_with_the_uri(cli, mlflow_client):
    import mlflow  # noqa: F401 - what the command imports comes first: the clock times the check itself
    import sentence_transformers  # noqa: F401

    import pipeline.__main__
    import pipeline.job  # noqa: F401

    port = free_port()
    started = time.monotonic()
    out = cli(*SMOKE, f"tracking.uri=http://127.0.0.1:{port}", with_store=False, timeout=60, in_process=True)
    elapsed = time.monotonic() - started
    assert out.returncode == 2 and f"http://127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
    assert elapsed < 15, elapsed  # the config composed, then one probe that gives up in seconds, not MLflow's retries
    assert all_runs(mlflow_client) == []


@pytest.mark.slow
def test_planted_secrets_appear_in_no_logged_byte(server, tmp_path, cli):
    """A token override and a credential-bearing URI: not in params, tags, artifacts, nor the stores, nor
    any file of the job's Hydra folder (``.hydra/``, the log, checkpoints with the trainer's saved
    arguments ``training_args.bin`` and ``trainer_state.json``), nor a console line."""
    token, password = "tok-9f8e7d6c5b4a", "hunter2-s3cr3t"
    host = server["uri"].removeprefix("http://")
    uri = f"http://alice:{password}@{host}"
    out = cli(
        *SMOKE,
        f"tracking.uri={uri}",
        "tracking.experiment_name=secrets",
        f"+training.hub_token={token}",
        f"data.path=https://bob:{password}@data.example.com/sets",  # not read: debug=smoke brings its rows
        "training.save_strategy=steps",  # a checkpoint at each of the 2 steps
        with_store=False,
        in_process=True,  # its console lines, from the file descriptors
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = _client(server["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("secrets").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.hub_token"] == "***"
    texts = [str(run.data.params), str(run.data.tags), run.info.run_name]
    local = tmp_path / "downloaded"
    client.download_artifacts(run.info.run_id, "", str(local))
    (model,) = logged_models(client, run)
    import mlflow

    mlflow.artifacts.download_artifacts(model.model_uri, dst_path=str(tmp_path / "model"))
    files = [
        p for folder in (local, tmp_path / "model", server["folder"], tmp_path / "hydra") for p in folder.rglob("*")
    ]
    files = [p for p in files if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml", "training_args.bin", "trainer_state.json"} <= names, names
    texts += [out.stdout, out.stderr]
    for secret in (token, password):
        assert not any(secret in text for text in texts), secret
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"{secret} in {leaked}"

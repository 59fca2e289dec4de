"""Planted secrets reach no byte of the store: params, tags, run names, artifacts, the logged model's
files (its sentence-transformers model card lists the trainer's arguments), on every path; nor any
file of the sweep's folder (``multirun.yaml``, each job's ``.hydra/``, log and checkpoints), nor the console.

A 2-job sweep (one job fails validation before its run starts) with a swept secret override, a
credential in a URI, and an uncommitted config change holding a token (a real git checkout named
through ``GIT_DIR`` / ``GIT_WORK_TREE``); then every file written (the SQLite file, the artifact
root, the sweep's folder) is read as bytes. ``tests/e2e/test_server.py`` does the same for a job
against a real ``mlflow server`` whose URI holds a password.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import all_runs

TOKEN = "tok-9f8e7d6c5b4a"  # on the command line
PASSWORD = "hunter2-s3cr3t"  # in a URI
PATCH_TOKEN = "ptk-5e4d3c2b1a"  # only in an uncommitted file


def dirty_checkout(folder) -> dict[str, str]:
    """A git checkout whose uncommitted change holds a token; the environment that points git at it."""
    folder.mkdir()
    (folder / "secrets.yaml").write_text("api_token: null\n")
    env = {"GIT_DIR": str(folder / ".git"), "GIT_WORK_TREE": str(folder)}
    for command in (
        ["init", "-q"],
        ["add", "secrets.yaml"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start"],
    ):
        subprocess.run(["git", *command], cwd=folder, check=True, env={"PATH": "/usr/bin:/bin", **env})
    (folder / "secrets.yaml").write_text(f"api_token: {PATCH_TOKEN}\nhf_token: {TOKEN}\n")
    return env


def leaks(files, texts: dict[str, str], secrets=(TOKEN, PASSWORD)) -> list[str]:
    """``secret in where`` for each planted secret found in a file's bytes or a captured text."""
    found = []
    for path in files:
        blob = path.read_bytes()
        found += [f"{secret} in {path}" for secret in secrets if secret.encode() in blob]
    for name, text in texts.items():
        found += [f"{name}: {line}" for line in text.splitlines() for secret in secrets if secret in line]
    return found


@pytest.mark.slow
def test_secrets_reach_no_byte_of_the_store_on_any_path(cli, mlflow_client, tmp_path, store):
    env = dirty_checkout(tmp_path / "checkout")
    out = cli(
        "-m",
        "debug=smoke",
        "training.lr_scheduler_type=bogus,linear",  # job 0 fails before its run starts
        f"+training.hub_token=choice({TOKEN})",  # a trainer argument (the model card lists those), swept: in job lines
        "training.save_strategy=steps",  # checkpoints: the trainer saves its arguments in each
        f"data.path=https://bob:{PASSWORD}@data.example.com/sets",  # not read: debug=smoke brings its rows
        f"hydra.sweep.dir={tmp_path}/sweep",
        env=env,
    )
    assert out.returncode == 1 and "1 of 2 jobs FAILED" in out.stderr, out.stderr[-3000:]
    runs = all_runs(mlflow_client)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]  # parent, failed job, job
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert finished.data.params["training.hub_token"] == "***" and finished.data.tags["git.dirty"] == "true"
    patch = mlflow_client.download_artifacts(finished.info.run_id, "git.patch", str(tmp_path / "patch"))
    assert "api_token: ***" in Path(patch).read_text()  # the patch is kept, its secret is not
    files = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    model_files = [p for p in files if "models" in p.parts]  # the LoggedModel's own folder
    card = next(p for p in model_files if p.name == "README.md")
    assert "All Hyperparameters" in card.read_text(), "the logged model's card lists no trainer arguments"
    assert {"model.safetensors", "config.json", "MLmodel"} <= {p.name for p in model_files}, model_files
    assert any(p.name == "leaderboard.csv" for p in files) and any(p.name == "model_card.md" for p in files), files
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "checkout" not in p.relative_to(tmp_path).parts]
    assert {"multirun.yaml", "overrides.yaml", "training_args.bin", "mlflow.db"} <= {p.name for p in written}
    leaked = leaks(written, {"stdout": out.stdout, "stderr": out.stderr}, (TOKEN, PASSWORD, PATCH_TOKEN))
    assert not leaked, "\n".join(leaked)  # the store, the artifacts, the sweep's folder, the console


def test_hydra_output_subdir_is_refused_on_the_command_line_and_scrubbed_when_a_config_file_sets_it(
    cli, mlflow_client, tmp_path
):
    """With ``hydra.output_subdir`` set, Hydra writes its own copies of the config, secrets included."""
    out = cli("debug=smoke", f"+training.hub_token={TOKEN}", "hydra.output_subdir=cfg", in_process=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        "error: hydra.output_subdir=cfg: Hydra would write each job's config there as it is, secrets included; the "
        "pipeline writes it scrubbed to .hydra/ itself: drop the override, or name that folder with "
        "hydra.callbacks.scrubbed_files.subdir=cfg."
    ]
    assert not (tmp_path / "hydra").exists() and all_runs(mlflow_client) == []
    # set in an experiment file, Hydra has written its copies when the job starts: they are replaced scrubbed
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "subdir.yaml").write_text("# @package _global_\nhydra:\n  output_subdir: cfg\n")
    out = cli("debug=smoke", "tracking.log_model=false", f"+training.hub_token={TOKEN}", "experiment=subdir",
              f"hydra.searchpath=[file://{tmp_path / 'conf'}]", in_process=True)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    copies = sorted((tmp_path / "hydra" / "cfg").iterdir())
    assert [p.name for p in copies] == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert all(TOKEN not in p.read_text() for p in copies) and "***" in (tmp_path / "hydra/cfg/config.yaml").read_text()

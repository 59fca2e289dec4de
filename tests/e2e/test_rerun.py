"""``python -m pipeline.rerun``: a logged run replays from its own config.yaml into a new run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import REPO_ROOT, rerun

SMOKE = ("debug=smoke", "tracking.log_model=false")
LOGGED_BEFORE_EVALUATORS_GROUP = Path(__file__).parent.parent / "data" / "config_before_evaluators_group.yaml"


@pytest.mark.slow
def test_rerun_of_a_smoke_run_reproduces_every_metric_exactly(run_job, cli, mlflow_client, store, capsys, caplog):
    # a guide and two evaluators; torch's dropout masks and one forward per column, as jobs ran before those
    # keys existed (the older config below lacks them and must replay as it ran: their ``logged_before``)
    original = run_job(*SMOKE, "loss=gist", "evaluators=[sts,ir]", "hardware.dropout_masks=null",
                       "hardware.merged_forward=false")  # fmt: skip
    # replayed with the process's speed switches off (the original ran with them on): they change no result
    speed_off = {"PIPELINE_GC_PAUSE": "0", "PIPELINE_MALLOC_KEEP": "0"}
    out = cli(original.run_id, "--tracking-uri", store["uri"], module="pipeline.rerun", env=speed_off)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "metrics match" in out.stdout
    replays = mlflow_client.search_runs(
        [original.experiment_id], filter_string=f"tags.`pipeline.rerun_of` = '{original.run_id}'"
    )
    assert len(replays) == 1 and replays[0].info.status == "FINISHED"
    before = mlflow_client.get_run(original.run_id).data
    after = replays[0].data
    compared = {k: v for k, v in before.metrics.items() if not any(w in k for w in rerun.TIMING)}
    assert {"loss", "sts-dev_spearman_cosine", "sts-test_spearman_cosine"} <= set(compared)
    assert {k: after.metrics[k] for k in compared} == compared
    # the same config, from the logged artifact; the replay scores its own baseline
    assert after.params == {**before.params, "baseline_reuse": "False"}
    for metric in compared:
        assert f"{metric} " in out.stdout

    # The same run as older code logged it (the one evaluator node beside evaluators, metrics lists): read in
    # today's shape, it replays to the same metrics.
    logged = LOGGED_BEFORE_EVALUATORS_GROUP.read_text().replace("REPO", str(REPO_ROOT))
    logged = logged.replace("sqlite:///STORE/mlflow.db", store["uri"]).replace(
        "STORE/artifacts", store["artifact_root"]
    )
    assert "\nevaluator:\n" in logged and "metrics:" in logged
    mlflow_client.log_text(original.run_id, logged, "config.yaml")
    assert rerun.main([original.run_id, "--tracking-uri", store["uri"], "tracking.log_model=false"]) == 0
    assert "metrics match" in capsys.readouterr().out
    assert "evaluator nodes of an older shape read as evaluators.sts,ir" in caplog.text
    assert "key 'hardware.dropout_masks' was not logged: None used, as before the key existed" in caplog.text


def test_rerun_with_a_changed_value_reports_the_difference(run_job, store, capsys):
    original = run_job(*SMOKE)
    code = rerun.main([original.run_id, "--tracking-uri", store["uri"], "training.learning_rate=0.01"])
    shown = capsys.readouterr().out
    assert code == 1 and "metrics DIFFER" in shown and "DIFFERENT" in shown


def test_rerun_refuses_unknown_runs_and_keys(run_job, store, capsys):
    with pytest.raises(SystemExit) as exited:
        rerun.main(["0123456789abcdef", "--tracking-uri", store["uri"]])
    assert exited.value.code == 2 and "not in" in capsys.readouterr().err
    original = run_job(*SMOKE, "stages=[load,evaluate]")
    with pytest.raises(SystemExit) as exited:
        rerun.main([original.run_id, "--tracking-uri", store["uri"], "training.no_such_field=1"])
    assert exited.value.code == 2 and "no_such_field" in capsys.readouterr().err


def test_rerun_lists_packages_that_differ_from_the_run_and_strict_versions_refuses(
    run_job, store, mlflow_client, capsys
):
    from pipeline.tracking import environment

    original = run_job(*SMOKE)
    logged = mlflow_client.get_run(original.run_id).data.tags
    lock = environment.lock_text()
    assert logged["environment.lock_digest"] == environment.digest(lock)
    assert tracking_text(mlflow_client, original.run_id, "environment/lock.txt") == lock
    record = tracking_text(mlflow_client, original.run_id, "environment/installed.txt")
    assert logged["environment.digest"] == environment.digest(record) and logged["environment.matches_lock"] == "true"
    installed = environment.parse_pins(record)
    assert installed["transformers"] == environment.installed()["transformers"] and "torch" in installed
    python = installed["python"]
    assert python == environment.python_version() == logged["version.python"]
    # the run as if logged on another Python, with another transformers and a package no longer installed
    other = f"3.{int(python.split('.')[1]) + 1}.0"
    faked = {**installed, "transformers": "4.0.0", "left-over-package": "1.2.3", "python": other}
    mlflow_client.log_text(original.run_id, environment.installed_text(faked), "environment/installed.txt")
    now = environment.installed()["transformers"]

    with pytest.raises(SystemExit) as exited:
        rerun.main([original.run_id, "--tracking-uri", store["uri"], "--strict-versions"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"transformers 4.0.0 -> {now}" in err and "left-over-package 1.2.3 -> missing" in err
    assert f"python {other} -> {python}" in err
    replays = f"tags.`pipeline.rerun_of` = '{original.run_id}'"
    assert not mlflow_client.search_runs([original.experiment_id], filter_string=replays), "refused, yet it replayed"

    code = rerun.main([original.run_id, "--tracking-uri", store["uri"], "training.learning_rate=0.01"])
    shown = capsys.readouterr()
    table = [line.split() for line in shown.err.splitlines()]
    assert ["transformers", "4.0.0", now] in table and ["left-over-package", "1.2.3", "missing"] in table
    assert ["python", other, python] in table
    assert code == 1 and "metrics DIFFER; the installed packages differ from the original's (3)" in shown.out
    assert f"transformers 4.0.0 -> {now}" in shown.out


def tracking_text(client, run_id: str, name: str) -> str:
    from pipeline import tracking

    return tracking.artifact_text(client, run_id, name)

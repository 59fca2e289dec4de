"""The MLflow UI as a user sees it: a real ``mlflow server`` over a store holding a small sweep,
opened in headless Chromium (Debian's ``chromium``; ``make chromium`` installs it when missing).

The compare page's screenshot stays in the test's tmp dir (its path is printed: ``pytest -s`` or ``-rA``).
"""

from __future__ import annotations

import html
import os
import re
import subprocess
from pathlib import Path

import pytest

from pipeline import REPO_ROOT
from pipeline.tracking.leaderboard import LOCAL_UI
from tests.conftest import all_runs, mlflow_server

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=20000",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        done = subprocess.run(["make", "-s", "chromium"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
            pytest.fail(f"`make chromium` could not install {CHROMIUM}: {done.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture
def ui_server(store, tmp_path):
    """``mlflow server`` on 127.0.0.1, a free port, over the test store; stopped on teardown."""
    with mlflow_server(tmp_path / "ui-server", store["uri"], timeout=90) as url:
        yield url


def page(chromium: str, url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The rendered page's visible text (``--dump-dom``), or a screenshot of it."""
    action = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    done = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *action, url], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", done.stdout, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.slow
def test_experiment_and_compare_pages_show_the_sweep(cli, mlflow_client, ui_server, chromium, tmp_path):
    out = cli("-m", "debug=smoke", "stages=[load,evaluate]", "seed=7,8", f"hydra.sweep.dir={tmp_path}/sweep",
              in_process=True)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    runs = all_runs(mlflow_client)
    parent = next(r for r in runs if r.data.tags.get("pipeline.role") == "sweep")
    children = [r for r in runs if r is not parent]
    experiment = parent.info.experiment_id
    profile = tmp_path / "chromium-profile"

    # The experiment page: the sweep's parent run, named by its swept values, over its 2 children.
    experiment_url = f"{ui_server}/#/experiments/{experiment}/runs"
    text = page(chromium, experiment_url, profile)
    assert parent.data.tags["mlflow.runName"] in text and "seed=7,8" in text, text[:3000]
    assert "3 matching runs" in text, text[:3000]

    # The compare view, at the address the sweep printed (and tagged on the parent) for a local UI:
    # both children side by side, the swept param lined up with its two values.
    compare_url = parent.data.tags["pipeline.compare_url"]
    assert compare_url in out.stdout and compare_url.startswith(f"{LOCAL_UI}/#/compare-runs?")
    compare_url = ui_server + compare_url[len(LOCAL_UI) :]
    text = page(chromium, compare_url, profile)
    assert "Comparing 2 Runs" in text, text[:3000]
    for child in children:
        assert child.data.tags["mlflow.runName"] in text, text[:3000]
    assert re.search(r"\bseed (7 8|8 7)\b", text), text[:3000]
    shot = tmp_path / "compare.png"
    page(chromium, compare_url, profile, screenshot=shot)
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")

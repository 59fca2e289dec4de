"""An unreachable Hub costs the 2-second probe the README promises, then everything works offline.

Runs in subprocesses without ``HF_HUB_OFFLINE`` (which the test session sets globally), the Hub
(``HF_ENDPOINT``) pointed at a local port whose accept queue is full: a connect there hangs, as it
does on a machine with no route to huggingface.co. A Hub request the offline decision missed would
hang there too, for the Hugging Face libraries' own timeouts (10 s a request).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pipeline import REPO_ROOT
from tests.conftest import all_runs

PROBE = """
import time
import datasets, huggingface_hub  # imported first, as the data stage does
from pipeline.runtime.offline import hub_reachable
started = time.monotonic()
reachable = hub_reachable()
took = time.monotonic() - started
print(reachable, huggingface_hub.constants.is_offline_mode(), datasets.config.HF_HUB_OFFLINE, took)
"""


@pytest.fixture
def unreachable_hub() -> Iterator[dict[str, str]]:
    """The environment of a process whose Hub never answers a connect (a listener with a full queue)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)  # the queue's one place: later connects hang
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    try:
        yield env
    finally:
        filler.close()
        listener.close()


def test_an_unreachable_hub_turns_already_imported_libraries_offline_within_the_probe(unreachable_hub):
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=unreachable_hub, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    reachable, hub_offline, datasets_offline, took = out.stdout.split()
    assert [reachable, hub_offline, datasets_offline] == ["False", "True", "True"], out.stdout
    assert float(took) < 2.5, f"the probe took {took} s; the README promises a 2-second connect"


@pytest.mark.slow
def test_a_job_runs_offline_when_the_hub_is_unreachable(unreachable_hub, store_overrides, mlflow_client, tmp_path):
    """The smoke job's tokenizer is the Hub id sentence-transformers/all-MiniLM-L6-v2: it resolves to the
    packaged copy and nothing waits on the Hub."""
    command = [sys.executable, "-m", "pipeline", "debug=smoke", *store_overrides, f"hydra.run.dir={tmp_path}/hydra"]
    out = subprocess.run(command, cwd=REPO_ROOT, env=unreachable_hub, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "The Hugging Face Hub cannot be reached: working offline" in log, log[-3000:]
    assert log.count("sentence-transformers/all-MiniLM-L6-v2 resolves to the packaged copy") == 1, log[-3000:]
    [run] = all_runs(mlflow_client)
    assert run.info.status == "FINISHED"
    seconds = (run.info.end_time - run.info.start_time) / 1000
    assert seconds < 30, f"the offline smoke run took {seconds:.0f} s: something waited on the Hub"

"""The offline decision reaches the Hugging Face libraries even when they were imported before it.

Runs in a subprocess without ``HF_HUB_OFFLINE`` (which the test session sets globally) and with the
Hub pointed at a closed local port (``HF_ENDPOINT``), so the Hub is unreachable on any machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pipeline import REPO_ROOT
from pipeline.runtime.launch import free_port

PROBE = """
import datasets, huggingface_hub  # imported first, as the data stage does
from pipeline.runtime.offline import hub_reachable
reachable = hub_reachable()
print(reachable, huggingface_hub.constants.is_offline_mode(), datasets.config.HF_HUB_OFFLINE)
"""


def test_an_unreachable_hub_turns_already_imported_libraries_offline():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "True"]
    assert time.monotonic() - started < 60  # imports; the probe itself is refused at once

"""The lock and the installed packages: ``python -m pipeline.env`` (``make setup``, ``make test-latest``)."""

from __future__ import annotations

import subprocess
import sys

from pipeline import REPO_ROOT
from pipeline.tracking import environment


def env_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.env", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_committed_lock_pins_every_dependency_but_torch_and_this_environment_matches_it():
    pins = environment.parse_pins(environment.lock_text())
    assert {"transformers", "sentence-transformers", "peft", "mlflow", "hydra-core", "pytest", "filelock"} <= set(pins)
    assert "torch" not in pins, "torch is installed apart (TORCH_SPEC), so the CPU or CUDA build stays a choice"
    assert int(pins["transformers"].split(".")[1]) < 24, "transformers 5.24 refuses the newest peft (0.21)"
    done = env_command("check")
    assert done.returncode == 0, done.stderr
    assert f"({len(pins)} packages)" in done.stdout


def test_a_version_that_differs_from_the_lock_is_named(tmp_path):
    real = environment.installed()["transformers"]
    lock = tmp_path / "lock.txt"
    lock.write_text(
        environment.lock_text().replace(f"transformers=={real}\n", "transformers==4.0.0\n")
        + "no-such-package==1.0 ; python_version >= '3'\n"
    )
    done = env_command("check", str(lock))
    assert done.returncode == 1
    rows = [line.split() for line in done.stderr.splitlines()]
    assert ["transformers", "4.0.0", real] in rows and ["no-such-package", "1.0", "missing"] in rows
    assert "2 installed packages differ" in done.stderr
    done = env_command("diff", str(lock), "--failed")
    assert done.returncode == 0 and "FAILED with the newest allowed versions; 2 differ from the lock" in done.stdout
    assert ["transformers", "4.0.0", real] in [line.split() for line in done.stdout.splitlines()]


def test_a_run_records_what_is_installed_and_whether_it_matches_the_lock(tmp_path):
    record = environment.snapshot()
    pins = environment.parse_pins(record.installed)
    assert pins == environment.current() and pins["python"] == sys.version.split()[0]
    assert "torch" in pins and "torch" not in environment.parse_pins(record.lock), "torch: recorded, not locked"
    assert record.tags["environment.digest"] == environment.digest(record.installed)
    assert record.tags["environment.lock_digest"] == environment.digest(environment.lock_text())
    assert record.tags["environment.matches_lock"] == "true"  # make setup installed the lock; torch is apart
    real = pins["transformers"]
    lock = tmp_path / "lock.txt"  # a lock this environment was not installed from: one pin differs
    lock.write_text(environment.lock_text().replace(f"transformers=={real}\n", "transformers==4.0.0\n"))
    other = environment.snapshot(lock)
    assert other.tags["environment.matches_lock"] == "false" and other.installed == record.installed
    assert other.tags["environment.digest"] == record.tags["environment.digest"]  # what is installed: unchanged

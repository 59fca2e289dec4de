"""``pipeline.run_command``: a command ends without the interpreter's teardown but keeps its exit
status, its output, its log file and every other exit handler."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline import REPO_ROOT

COMMAND = """
import atexit, logging, sys, threading, time
from pipeline.cli import run_command

how, folder = sys.argv[1], sys.argv[2]

def main():
    handler = logging.FileHandler(f"{folder}/command.log")  # buffered until flushed or closed
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    logging.info("logged before the end")
    atexit.register(lambda: open(f"{folder}/handler.txt", "w").write("ran"))
    worker = threading.Thread(target=lambda: (time.sleep(0.5), open(f"{folder}/thread.txt", "w").write("joined")))
    worker.start()  # a non-daemon thread: the process waits for it
    sys.stdout.write("printed without a newline")
    if how == "exit3":
        sys.exit(3)
    if how == "message":
        sys.exit("error: told to stop")
    if how == "raise":
        raise RuntimeError("boom: api_token=tok-crash-1 at https://bob:pw-crash-2@example.com")
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "returns":
        return 4

run_command(main)
"""


@pytest.mark.parametrize(
    "how, status", [("ok", 0), ("exit3", 3), ("message", 1), ("raise", 1), ("interrupt", 130), ("returns", 4)]
)
def test_status_output_log_and_exit_handlers_survive_the_fast_exit(tmp_path, how, status):
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, how, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == status, done.stderr
    assert done.stdout == "printed without a newline"
    assert (tmp_path / "command.log").read_text() == "logged before the end\n"
    assert (tmp_path / "handler.txt").read_text() == "ran"
    assert (tmp_path / "thread.txt").read_text() == "joined"
    if how == "message":
        assert done.stderr.strip() == "error: told to stop"
    if how == "raise":  # the traceback, scrubbed
        assert "RuntimeError: boom: api_token=*** at https://***@example.com" in done.stderr, done.stderr
        assert "Traceback (most recent call last)" in done.stderr and "crash-" not in done.stderr


SPLICED = """
import os, sys
from pipeline.cli import run_command

def main():
    sys.stderr.write("error: the first half")  # print's line, before print writes its newline
    os.write(2, b"another process's line\\n")  # a joblib worker sharing the pipe
    sys.stderr.write(" and its end\\n")
    sys.stdout.write("step 1/4")
    os.write(1, b"step 9/40\\n")
    print(" loss 0.5")

run_command(main)
"""


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_line_leaves_whole_so_processes_sharing_a_pipe_never_splice_their_lines(unbuffered):
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    done = subprocess.run(
        [sys.executable, "-c", SPLICED], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "another process's line\nerror: the first half and its end\n"
    assert done.stdout == "step 9/40\nstep 1/4 loss 0.5\n"

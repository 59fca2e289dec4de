"""A battery of user mistakes through the real CLI: each is one clear message, fast, and leaves no run.

(With the cases of test_bad_input.py: missing folder, unknown group option, unreachable server, ...)

Every case runs ``python -m pipeline``'s entry point (in this process; the unreachable server and
the traceback on request in a new interpreter) against a SQLite store of its own and checks: a
non-zero exit, a message that names the file / row / column / key and says how to fix it, no
Python traceback, no MLflow run, and an answer well within 60 seconds.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from pipeline.stages.smoke import EXAMPLE_DIR
from tests.conftest import all_runs, in_process

# The safety net: were a check to let a case through, it would train the tiny model for one step.
BASE = ("model=tiny", "training.max_steps=1", "training.per_device_train_batch_size=4")


def _example_copy(root: Path) -> Path:
    folder = root / "data"
    shutil.copytree(EXAMPLE_DIR, folder)
    return folder


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(folder: Path, name: str, text: str) -> None:
    for old in folder.glob(f"{Path(name).stem}.*"):
        old.unlink()
    (folder / name).write_text(text, encoding="utf-8")


def _case(name: str, tmp: Path) -> tuple[list[str], list[str]]:
    """(overrides, fragments the message must contain) for one bad input, files prepared under tmp."""
    data = _example_copy(tmp)
    local = f"data.local_dir={data}"
    train_header_only = "anchor,positive\n"
    if name == "unknown_group_option":
        return ["loss=no_such_loss"], ["no_such_loss", "loss"]
    if name == "unknown_key":
        return ["training.learnin_rate=0.1"], ["learnin_rate"]
    if name == "negative_learning_rate":
        return ["training.learning_rate=-0.001"], ["training.learning_rate=-0.001", "a number > 0"]
    if name == "zero_batch_size":
        return ["training.per_device_train_batch_size=0"], [
            "training.per_device_train_batch_size=0",
            "a whole number >= 1",
        ]
    if name == "zero_steps":
        return ["training.max_steps=0", "training.num_train_epochs=0"], ["training.max_steps", "max_steps > 0"]
    if name == "string_seed":
        return ["seed=abc"], ["seed='abc'", "whole number"]
    if name == "negative_threads":
        return ["hardware.num_threads=-2"], ["hardware.num_threads=-2", "whole number >= 1 or null"]
    if name == "string_processes":
        return ["hardware.num_processes=two"], ["hardware.num_processes='two'", "whole number >= 1"]
    if name == "string_guard_patience":
        return ["guard.chance_patience=many"], ["guard.chance_patience='many'", "whole number >= 0"]
    if name == "negative_max_seq_length":
        return ["model.max_seq_length=-1"], ["model.max_seq_length=-1", "whole number of tokens"]
    if name == "missing_dir":
        return [f"data.local_dir={tmp}/nowhere"], ["data.local_dir", "nowhere", "not a folder"]
    if name == "missing_file":
        (data / "train.csv").unlink()
        return [local], ["no train split", "train.csv", "data.splits.train"]
    if name == "garbage_file":
        _write(data, "train.jsonl", '{"anchor": "a", "positive": "b"}\nthis is not json {{{\n')
        return [local], ["train.jsonl", "cannot be read", "one JSON object per line"]
    if name == "binary_file":
        _write(data, "train.parquet", "\x00\x01not a parquet file at all\x02")
        return [local], ["train.parquet", "cannot be read"]
    if name == "header_only":
        _write(data, "train.csv", train_header_only)
        return [local], ["train.csv", "no rows", "add rows"]
    if name == "missing_column":
        _write(data, "train.csv", "query,answer\n" + "a,b\n" * 10)
        return [local], ["train.csv", "'positive'", "data.columns"]
    if name == "empty_cell":
        rows = "".join(f"anchor {i},positive {i}\n" for i in range(8))
        _write(data, "train.csv", "anchor,positive\n" + rows + "anchor 8,\n")
        return [local], ["train.csv", "row 9", "line 10", "'positive'", "fill or remove"]
    if name == "null_cell_jsonl":
        rows = [{"anchor": f"a{i}", "positive": f"p{i}"} for i in range(8)] + [{"anchor": "a8", "positive": None}]
        _write(data, "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        return [local], ["train.jsonl", "row 9", "'positive'", "empty"]
    if name == "non_numeric_score":
        _write(data, "test.csv", "sentence1,sentence2,score\na,b,1.0\nc,d,high\n")
        return [local], ["test.csv", "row 2", "'score'", "'high'", "numeric"]
    if name == "out_of_range_score":
        _write(data, "test.csv", "sentence1,sentence2,score\na,b,1.0\nc,d,7.5\n")
        return [local, "evaluators.sts.score_range=[0,5]"], ["test.csv", "row 2", "7.5", "evaluators.sts.score_range"]
    if name == "unknown_label":
        _write(data, "train.csv", "premise,hypothesis,label\np,h1,entailment\np,h2,contradiction\np,h3,maybe\n")
        return [
            local,
            "data=nli_triplets",
            f"data.local_dir={data}",
            "data.splits.train=train",
            "data.splits.dev=dev",
            "data.splits.test=test",
        ], ["row 3", "'maybe'", "data.train_transform"]
    if name == "fewer_rows_than_batch":
        _write(data, "train.csv", "anchor,positive\na,b\nc,d\n")
        return [local, "training.per_device_train_batch_size=16"], [
            "train.csv",
            "2 rows",
            "per_device_train_batch_size=16",
            "lower the batch size",
        ]
    if name == "triplet_evaluator_on_pairs":
        return ["evaluator=triplet"], ["dev.csv", "'anchor'", "evaluators.triplet.columns"]
    if name == "scored_loss_without_score":
        return ["loss=cosent"], ["CoSENTLoss", "score", "data.train_columns"]
    if name == "leakage_fail":  # test.csv's first pair in train.csv, up to case, punctuation and order
        with open(data / "train.csv", "a", encoding="utf-8") as stream:
            stream.write("MANGOES grow in tropical climates,  she locked the door behind her!\n")
        return [local, "data.leakage=fail"], ["data.leakage=fail", "test: 1 exact", "data.leakage=drop"]
    if name == "leakage_bad_value":
        return ["data.leakage=maybe"], ["data.leakage='maybe'", "warn, drop, fail, off"]
    if name == "unreachable_server":
        return [f"tracking.uri=http://127.0.0.1:{_closed_port()}"], [
            "tracking.uri",
            "127.0.0.1",
            "cannot be reached",
            "mlflow server",
        ]
    raise KeyError(name)


CASES = [
    "unknown_key",
    "negative_learning_rate",
    "string_seed",
    "negative_threads",
    "string_processes",
    "string_guard_patience",
    "negative_max_seq_length",
    "zero_batch_size",
    "zero_steps",
    "missing_file",
    "garbage_file",
    "binary_file",
    "header_only",
    "missing_column",
    "empty_cell",
    "null_cell_jsonl",
    "out_of_range_score",
    "unknown_label",
    "fewer_rows_than_batch",
    "triplet_evaluator_on_pairs",
    "scored_loss_without_score",
    "leakage_fail",
    "leakage_bad_value",
    "unreachable_server",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_message_and_no_run(name, tmp_path, cli, mlflow_client):
    overrides, fragments = _case(name, tmp_path)
    started = time.monotonic()
    subprocess = name == "unreachable_server"  # the rest run the command's entry point in this process
    out = cli(*BASE, *overrides, timeout=60, with_store=not subprocess, in_process=not subprocess)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr
    assert "Traceback" not in message, message[-3000:]
    assert len([line for line in message.splitlines() if line.startswith("error: ")]) == 1, message[-2000:]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message[-2000:]}"
    assert elapsed < 60
    if name == "unreachable_server":  # the store it names cannot be written: nothing was made on disk either
        assert not [p.name for p in (tmp_path / "hydra").rglob("*") if p.name in ("trainer", "model", "eval")]
    else:
        assert all_runs(mlflow_client) == []


# A value outside its declaration (pipeline.stages.settings): the key, the value and what the key allows.
DECLARED = {
    "hardware.precision=fp61": "hardware.precision='fp61': one of auto, fp32, bf16, fp16",
    "hardware.accelerator=tpu": "hardware.accelerator='tpu': one of cpu, cuda",
    "mine.sampling_strategy=hardest": "mine.sampling_strategy='hardest': one of top, random",
    "mine.corpus=everything": "mine.corpus='everything': one of split, positives",
    "hardware.num_threads=-2": "hardware.num_threads=-2: a whole number >= 1 or null",
    "guard.chance_patience=-5": "guard.chance_patience=-5: a whole number >= 0",
    "mine.range_max=-1": "mine.range_max=-1: a whole number >= 1 or null",
    "model.peft.r=0": "model.peft.r=0: a whole number >= 1 or null",
    "hardware.timeout_s=0": "hardware.timeout_s=0: a number of seconds > 0",
    "loss.matryoshka_dims=[8,16]": "loss.matryoshka_dims=[8, 16]: a non-empty list of whole numbers >= 1, largest first",
    "early_stopping.patience=0": "early_stopping.patience=0: a whole number >= 1 or null",
    "seed=abc": "seed='abc': a whole number in [0, 4294967295]",
}


def test_a_value_outside_its_declaration_is_one_line_and_no_run(tmp_path, cli, mlflow_client):
    """Each refused in the job's first second (the safety net would train), in one line naming the key."""
    for override, expected in DECLARED.items():
        out = cli(*BASE, override, timeout=60, in_process=True)
        assert out.returncode == 2, (override, out.stderr[-2000:])
        errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {expected}"), (override, out.stderr[-2000:])
        assert "Traceback" not in out.stderr
    assert all_runs(mlflow_client) == []


def test_traceback_on_request(tmp_path, cli):
    out = cli(*BASE, "training.learning_rate=-1", env={"PIPELINE_TRACEBACK": "1"}, timeout=60)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "PipelineError" in out.stderr


def test_an_empty_run_id_is_one_line_and_touches_no_store(tmp_path, capsys):
    """A script whose run lookup came back empty passes ``""``: every command that takes a run id refuses
    it in one line before it opens the store (no file is created), not with MLflow's traceback."""
    db = tmp_path / "mlflow.db"
    uri = ["--tracking-uri", f"sqlite:///{db}"]
    cases = [
        ("promote", ["--parent", ""], "--parent"),
        ("promote", ["--run", " "], "--run"),
        ("compare", ["--parent", ""], "--parent"),
        ("rerun", [""], "RUN_ID"),
        ("resume", [""], "RUN_ID"),
    ]
    for module, args, spelling in cases:
        code, _, err = in_process(module, capsys, *args, *uri)
        assert code == 2, (module, args, err[-2000:])
        assert "Traceback" not in err
        assert err.strip().splitlines() == [
            f"error: {spelling} is empty: give a run id (python -m pipeline.compare --experiment NAME lists the runs)."
        ], (module, args)
        assert not db.exists()

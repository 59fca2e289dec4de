"""Bad input through the CLI's entry point: one clear message, non-zero exit, no traceback, no run left RUNNING."""

from __future__ import annotations

import pytest

from tests.conftest import all_runs


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def bad_dir(tmp_path):
    """A data folder whose train split is fine and whose dev/test the case fills in."""
    folder = tmp_path / "data"
    write(folder / "train.csv", "anchor,positive\n" + "".join(f"a{i},p{i}\n" for i in range(8)))
    write(folder / "dev.csv", "sentence1,sentence2,score\nx,y,1.0\nu,v,2.0\n")
    write(folder / "test.csv", "sentence1,sentence2,score\nx,y,1.0\nu,v,2.0\n")
    return folder


SMOKE_TRAIN = ["model=tiny", "training.max_steps=1", "training.per_device_train_batch_size=4"]


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing_dir", ["data.local_dir=", "is not a folder"]),
        ("missing_column", ["test.csv", "missing column(s) ['score']", "data.columns"]),
        ("empty_cell", ["test.csv", "row 2 (line 3)", "'sentence2' is empty"]),
        ("non_numeric_score", ["dev.csv", "row 1 (line 2)", "'score'", "'high'"]),
        ("unknown_option", ["loss/nonsense", "Available options"]),
        ("guide_not_placed", ["guide=bert_50", "model@guide=bert_50"]),  # a guide is any model option
        ("unreachable_tracking", ["tracking.uri='http://127.0.0.1:9'", "cannot be reached"]),
        ("unknown_training_key", ["training.learning_rat", "not a SentenceTransformerTrainingArguments field"]),
    ],
)
def test_bad_input_is_one_clear_message(cli, mlflow_client, bad_dir, case, expect, tmp_path):
    args = [f"data.local_dir={bad_dir}", *SMOKE_TRAIN]
    if case == "missing_dir":
        args[0] = f"data.local_dir={bad_dir}/nope"
    elif case == "missing_column":
        write(bad_dir / "test.csv", "sentence1,sentence2\nx,y\n")
    elif case == "empty_cell":
        write(bad_dir / "test.csv", 'sentence1,sentence2,score\nx,y,1.0\nu,"",2.0\n')
    elif case == "non_numeric_score":
        write(bad_dir / "dev.csv", "sentence1,sentence2,score\nx,y,high\nu,v,2.0\n")
    elif case == "unknown_option":
        args.append("loss=nonsense")
    elif case == "guide_not_placed":
        args.append("guide=bert_50")  # the former spelling takes minilm and tiny only
    elif case == "unknown_training_key":
        args.append("+training.learning_rat=0.1")
    if case == "unreachable_tracking":  # nothing listens on port 9 (discard)
        out = cli(*args, "tracking.uri=http://127.0.0.1:9", with_store=False, timeout=120)
    else:  # Hydra's own refusal through a new interpreter; the pipeline's checks in this one
        out = cli(*args, timeout=120, in_process=case not in ("unknown_option", "guide_not_placed"))
    message = out.stderr + out.stdout
    assert out.returncode == 2, message[-2000:]
    assert "Traceback" not in message, message[-2000:]
    for fragment in expect:
        assert fragment in message, (fragment, message[-2000:])
    if case == "unreachable_tracking":  # that store cannot be written: nothing was made on disk either
        assert not [p.name for p in (tmp_path / "hydra").rglob("*") if p.name in ("trainer", "model", "eval")]
    else:
        assert all_runs(mlflow_client) == []

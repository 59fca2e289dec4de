"""Data and config mistakes found before any model loads: one PipelineError naming the file, row or key.

Each case composes the real config over a small data folder and calls the preflight checks the job
runs (``validate.check_config``, ``load.load_data``); nothing is mocked, no model is loaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import PipelineError
from pipeline.stages import load, validate
from pipeline.stages.smoke import EXAMPLE_DIR
from pipeline.stages.spec import read_spec
from tests.conftest import compose_config


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(EXAMPLE_DIR, folder)
    return folder


def preflight(*overrides: str) -> None:
    spec = read_spec(compose_config(list(overrides)))
    validate.check_config(spec)
    load.load_data(spec)


def test_a_whitespace_only_cell_names_its_row(data):
    rows = "".join(f"anchor {i},positive {i}\n" for i in range(8))
    (data / "train.csv").write_text("anchor,positive\n" + rows + 'anchor 8,"   "\n')
    with pytest.raises(PipelineError, match=r"train.csv: row 9 \(line 10\), column 'positive' is empty"):
        preflight(f"data.local_dir={data}")


def test_a_text_score_before_a_train_transform_names_its_row(data):
    scored = "sentence1,sentence2,score\na,b,4.5\nc,d,high\n"
    (data / "train.csv").write_text(scored)
    shutil.copy(data / "dev.csv", data / "validation.csv")
    with pytest.raises(PipelineError, match=r"train.csv: row 2 \(line 3\), column 'score' holds 'high'"):
        preflight("data=stsb_pairs", f"data.local_dir={data}")


@pytest.mark.parametrize("split", ["test", "dev"])
def test_constant_scores_in_an_evaluation_split_are_a_data_error(data, split):
    # test: the final evaluation would be NaN after training; dev: in-training evaluation would be
    # NaN and look like a diverging model. Both are the data's fault and are said so up front.
    (data / f"{split}.csv").write_text("sentence1,sentence2,score\n" + "".join(f"a{i},b{i},3.0\n" for i in range(6)))
    with pytest.raises(PipelineError, match=rf"{split}.csv: column 'score' holds 3.0 in every row"):
        preflight(f"data.local_dir={data}", "training.eval_strategy=steps", "training.eval_steps=1")


def test_max_steps_null_is_a_one_line_error():
    with pytest.raises(PipelineError, match=r"training.max_steps=None: a whole number; optimizer steps"):
        preflight("training.max_steps=null")


def test_evaluator_none_has_no_optimized_metric():
    assert compose_config(["evaluator=none"]).optimized_metric is None
    assert compose_config([]).optimized_metric == "sts-dev_spearman_cosine"


def test_warmup_ratio_is_an_alias_for_the_float_warmup_steps(tmp_path, caplog):
    from pipeline.runtime.hardware import resolve_machine
    from pipeline.stages.train import training_arguments

    cfg = compose_config(["training.warmup_ratio=0.25"])
    machine = resolve_machine(cfg.hardware, cfg.training)
    args = training_arguments(cfg.training, machine, tmp_path, None)
    assert args.warmup_steps == 0.25
    assert "training.warmup_ratio=0.25 is read as training.warmup_steps=0.25" in caplog.text
    with pytest.raises(PipelineError, match=r"training.warmup_ratio=1.5: must be a fraction"):
        training_arguments(compose_config(["training.warmup_ratio=1.5"]).training, machine, tmp_path, None)


def test_empty_cells_are_found_and_counted_across_check_blocks(data, monkeypatch):
    """The cell checks read a column a block of rows at a time: the first empty cell of a later block is
    named by its row in the file, and the count covers every block."""
    monkeypatch.setattr(load, "CHECK_ROWS", 3)
    rows = [f"anchor {i},positive {i}" for i in range(10)]
    rows[4], rows[8] = "anchor 4,", 'anchor 8," "'
    (data / "train.csv").write_text("anchor,positive\n" + "\n".join(rows) + "\n")
    with pytest.raises(PipelineError, match=r"row 5 \(line 6\), column 'positive' is empty \(2 empty cell"):
        preflight(f"data.local_dir={data}")

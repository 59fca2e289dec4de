"""What cache keys read besides the config: the pipeline's own code, TF32 as torch has it, file content."""

from __future__ import annotations

import dataclasses
import os
import shutil

import torch

from pipeline.runtime import hardware
from pipeline.stages import baseline, reuse
from tests.conftest import compose_config


def test_a_fix_in_the_code_that_builds_or_scores_evaluators_changes_the_code_digest(tmp_path):
    """The baseline's (and the mined set's) key holds a digest of the code that makes it: a fix there is
    never answered with a value the old code made."""
    package = shutil.copytree(reuse.PACKAGE, tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for files in (baseline.SOURCES, ("stages/mine.py",)):
        before = reuse.source_digest(*files, package=package)
        assert before == reuse.source_digest(*files)  # the same files: the same digest, wherever they are
        for name in files:
            edited = package / name
            original = edited.read_text()
            edited.write_text(original.replace('"""', '""" ', 1))
            assert reuse.source_digest(*files, package=package) != before, name
            edited.write_text(original)
    assert {"stages/build.py", "stages/evaluate.py"} <= set(baseline.SOURCES)


def test_tf32_as_torch_has_it_is_a_key_input_and_a_sweep_can_turn_it_off_again():
    kept = torch.backends.fp32_precision
    try:
        cfg = compose_config([])
        machine = hardware.resolve_machine(cfg.hardware, cfg.training)
        hardware.configure_threads(dataclasses.replace(machine, num_threads=None, tf32=False))
        off = reuse.tf32_settings()
        hardware.configure_threads(dataclasses.replace(machine, num_threads=None, tf32=True))
        on = reuse.tf32_settings()
        assert on != off and on["matmul"] == "tf32"
        hardware.configure_threads(dataclasses.replace(machine, num_threads=None, tf32=False))  # a sweep's next job
        assert reuse.tf32_settings()["matmul"] != "tf32"
    finally:
        torch.backends.fp32_precision = kept


def test_content_digest_sees_a_rewrite_that_keeps_size_and_modification_time(tmp_path):
    (tmp_path / "data").mkdir()
    rows = tmp_path / "data" / "dev.csv"
    rows.write_text("sentence1,sentence2,score\na,b,0.0\n")
    before, stat = reuse.content_digest(tmp_path / "data"), rows.stat()
    rows.write_text("sentence1,sentence2,score\na,b,4.9\n")
    os.utime(rows, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rows.stat().st_size == stat.st_size and rows.stat().st_mtime_ns == stat.st_mtime_ns
    assert reuse.content_digest(tmp_path / "data") != before
    (tmp_path / "empty").mkdir()
    assert reuse.content_digest(tmp_path / "data", skip=(".csv",)) == reuse.content_digest(tmp_path / "empty")


def test_the_tokenizer_digest_is_the_same_before_and_after_the_tokenizer_encodes():
    """A fast tokenizer's backend records the truncation and padding of its last call: a key made after the
    packing check encoded its sentences must equal one made when the check's result was read back."""
    from pipeline.stages.build import load_model

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    fresh = baseline.tokenizer_digest(model.tokenizer)
    model.encode(["a short sentence", "and a longer sentence to pad the first one to"])
    assert baseline.tokenizer_digest(model.tokenizer) == fresh
    model.tokenizer.backend_tokenizer.add_tokens(["zzzword"])  # the definition itself still counts
    assert baseline.tokenizer_digest(model.tokenizer) != fresh

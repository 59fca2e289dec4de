"""A config logged before evaluators became one group (tests/data/config_before_evaluators_group.yaml, the
resolved config.yaml of a real run: ``debug=smoke loss=gist evaluator=sts evaluators=[ir]``) reads in
today's shape (``logged_config.translate_logged``), as ``pipeline.rerun`` and ``pipeline.resume`` read it."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from pipeline import logged_config
from pipeline.stages import schema
from pipeline.stages.spec import read_spec
from tests.conftest import compose_config

LOGGED = Path(__file__).parent.parent / "data" / "config_before_evaluators_group.yaml"


def logged():
    cfg = OmegaConf.create(LOGGED.read_text())
    OmegaConf.set_struct(cfg, True)  # as tracking.logged_file reads it
    return cfg


def test_the_old_evaluator_node_reads_as_todays_evaluators_group(caplog):
    old = logged()
    with caplog.at_level(logging.WARNING):
        cfg = logged_config.translate_logged(old, "config.yaml of run R")
    assert "evaluator" not in cfg and list(cfg.evaluators) == ["sts", "ir"]  # evaluator first, as it ran
    assert "config.yaml of run R: evaluator nodes of an older shape read as evaluators.sts,ir" in caplog.text
    sts, ir = cfg.evaluators.sts, cfg.evaluators.ir
    assert sts.evaluator == {"_target_": old.evaluator._target_, "_partial_": True}
    assert "metrics" not in sts and "metrics" not in ir  # the class says what it logs
    assert (sts.primary_metric, list(sts.columns), list(sts.splits)) == (
        "spearman_cosine",
        [*old.evaluator.columns],
        ["dev", "test"],
    )
    assert (ir.label, ir.corpus, ir.evaluator._target_) == ("label", None, old.evaluators.ir._target_)
    schema.check_keys(cfg)  # today's schema takes it as it is: nothing dropped, nothing unknown
    assert schema.unknown_keys(cfg) == []

    # the same job composed today: the same evaluators, splits, metrics and optimized metric
    replayed = read_spec(logged_config.fill_missing(cfg, "config.yaml of run R"))
    today = read_spec(compose_config(["debug=smoke", "loss=gist", "evaluators=[sts,ir]"]))
    fields = ("name", "target", "columns", "splits", "primary_metric", "metrics", "label", "score_range", "corpus")
    shape = [[getattr(e, f) for f in fields] for e in replayed.evaluators]
    assert shape == [[getattr(e, f) for f in fields] for e in today.evaluators]
    assert replayed.optimized_metric == today.optimized_metric == "sts-dev_spearman_cosine"
    assert replayed.guide == today.guide and replayed.splits_needed == today.splits_needed


def test_a_config_of_todays_shape_comes_back_as_it_is(caplog):
    cfg = compose_config(["debug=smoke", "evaluators=[sts,ir]"])
    with caplog.at_level(logging.WARNING):
        assert logged_config.translate_logged(cfg, "config.yaml of run R") is cfg
    assert not caplog.text
    none = logged()
    with open_dict(none):  # evaluator=none: nothing runs, the list stays as logged
        none.evaluator._target_ = None
        del none.evaluators["ir"]
    assert dict(logged_config.translate_logged(none, "R").evaluators) == {}


def test_a_key_newer_than_the_run_replays_as_runs_ran_before_it(caplog):
    """``hardware.dropout_masks`` (bits by default) changes the draws: a run logged before the key existed
    drew torch's own masks, and replays with them (its ``logged_before``), not with today's default."""
    with caplog.at_level(logging.WARNING):
        cfg = logged_config.fill_missing(logged(), "config.yaml of run R")
    assert cfg.hardware.dropout_masks is None
    assert (
        "config.yaml of run R: key 'hardware.dropout_masks' was not logged: None used, as before the key existed "
        "(today's default: bits)" in caplog.text
    )
    assert compose_config([]).hardware.dropout_masks == "bits"
    today = compose_config(["hardware.dropout_masks=null"])  # a logged value is kept as it is
    assert logged_config.fill_missing(today, "R").hardware.dropout_masks is None

"""Closed config nodes: an unknown key is refused wherever it was written, naming the file, the key and the
nearest valid key; a library's arguments are checked by its signature; replaying an old run drops (and
names) the keys the schema no longer has."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline import CONF_DIR, REPO_ROOT, PipelineError, logged_config
from pipeline.stages import schema

EXPERIMENT_TYPO = "# @package _global_\nearly_stoping:\n  patience: 2\n"
GUARD_TYPO = "# @package _global_\nguard:\n  chance_patiense: 5\n"


def conf_copy(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of conf/ (experiments included) under tmp_path/conf with ``files`` (relative path -> text) added."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)  # follows the conf/experiment link: a real folder in the copy
    for name, text in files.items():
        (conf / name).write_text(text, encoding="utf-8")
    return conf


def refusal(conf: Path, overrides: list[str]) -> str:
    """The one-line message check_keys raises for the config composed from ``conf``."""
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    with pytest.raises(PipelineError) as refused:
        schema.check_keys(cfg, choices, [conf])
    return str(refused.value)


@pytest.mark.slow  # imports sentence-transformers for the signatures
def test_typos_in_any_file_are_refused_naming_the_file_the_key_and_the_nearest_key(tmp_path, monkeypatch):
    mnrl = (CONF_DIR / "loss" / "mnrl.yaml").read_text().replace("scale: 20.0", "scal: 20.0")
    conf = conf_copy(
        tmp_path,
        {
            "experiment/mine.yaml": EXPERIMENT_TYPO,
            "experiment/mine_guard.yaml": GUARD_TYPO,
            "experiment/mine_training.yaml": "# @package _global_\ntraining:\n  learning_rat: 0.1\n",
            "hardware/mine.yaml": "defaults:\n  - cpu\n  - _self_\npacking_row_lenght: 16\n",
            "loss/mine.yaml": mnrl,
        },
    )
    monkeypatch.chdir(tmp_path)  # file names are given relative to the working directory
    assert refusal(conf, ["experiment=mine", "debug=smoke"]) == (
        "conf/experiment/mine.yaml: unknown key 'early_stoping' (did you mean 'early_stopping'?)"
    )
    assert refusal(conf, ["experiment=mine_guard", "debug=smoke"]) == (
        "conf/experiment/mine_guard.yaml: unknown key 'guard.chance_patiense' (did you mean 'chance_patience'?)"
    )
    assert refusal(conf, ["experiment=mine_training"]) == (
        "conf/experiment/mine_training.yaml: unknown key 'training.learning_rat' (did you mean 'learning_rate'?): "
        "not a SentenceTransformerTrainingArguments field"
    )
    assert refusal(conf, ["hardware=mine"]) == (
        "conf/hardware/mine.yaml: unknown key 'hardware.packing_row_lenght' (did you mean 'packing_row_length'?)"
    )
    assert refusal(conf, ["loss=mine"]) == (
        "conf/loss/mine.yaml: unknown key 'loss.scal' (did you mean 'scale'?): "
        "MultipleNegativesRankingLoss takes no argument 'scal'"
    )
    # The same key through an override (`+` gets it past Hydra's own struct check): no file to name.
    assert refusal(conf, ["+early_stoping.patience=2"]) == (
        "command line: unknown key 'early_stoping' (did you mean 'early_stopping'?)"
    )
    # A nested _target_ node (the loss's similarity function) and an evaluator's arguments are bound too.
    assert "unknown key 'loss.similarity_fct.pth'" in refusal(conf, ["+loss.similarity_fct.pth=x"])
    assert "EmbeddingSimilarityEvaluator takes no argument 'main_similarity_fn'" in refusal(
        conf, ["+evaluators.sts.evaluator.main_similarity_fn=cosine"]
    )


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.slow
def test_every_config_and_experiment_has_only_known_keys():
    """Every option of every group, every experiment, with and without debug=smoke: nothing unknown."""
    jobs = [
        [f"{group}={option}"]
        for group in ("model", "data", "evaluator", "hardware", "tracking")
        for option in _options(group)
    ]
    jobs += [[f"loss={option}"] for option in _options("loss")] + [[f"sweep={option}"] for option in _options("sweep")]
    jobs += [["evaluators=[ir,sts,triplet]"], ["data=nli_stsb_pairs", "eval_data=stsb", "model@miner=tiny"]]
    experiments = sorted(p.stem for p in (REPO_ROOT / "experiments").glob("*.yaml"))
    jobs += [[f"experiment={name}", *smoke] for name in experiments for smoke in ([], ["debug=smoke"])]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        unknown = {" ".join(o): schema.unknown_keys(compose("config", overrides=o)) for o in jobs}
    assert {job: keys for job, keys in unknown.items() if keys} == {}


def test_replaying_an_old_config_drops_unknown_keys_with_one_warning_each(caplog):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        logged = OmegaConf.create(OmegaConf.to_yaml(compose("config", overrides=["debug=smoke"])))
    OmegaConf.set_struct(logged, True)
    logged.guard._set_flag("struct", False)
    logged.guard.retired_check = 3  # a key an older version logged
    logged._set_flag("struct", False)
    logged.retired_section = {"a": 1}
    logged._set_flag("struct", True)
    with caplog.at_level(logging.WARNING, logger=logged_config.__name__):
        kept = logged_config.drop_unknown(logged, "config.yaml of run abc")
    assert "retired_check" not in kept.guard and "retired_section" not in kept
    assert kept.guard.chance_patience == logged.guard.chance_patience and OmegaConf.is_struct(kept)
    assert [r.getMessage() for r in caplog.records] == [
        "config.yaml of run abc: key 'guard.retired_check' is no longer a config key: ignored",
        "config.yaml of run abc: key 'retired_section' is no longer a config key: ignored",
    ]
    schema.check_keys(kept)  # what remains passes the strict check

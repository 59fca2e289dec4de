"""Every config group option composes, and composition alone stays cheap (no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline import CONF_DIR, REPO_ROOT
from tests.conftest import compose_config

GROUPS = ["model", "loss", "data", "eval_data", "hardware", "training", "tracking", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.get(group) is not None or group == "debug"


@pytest.mark.parametrize("option", options("evaluator"))
def test_each_evaluator_option_composes_and_the_former_spelling_selects_it(option):
    """evaluator=NAME (the one evaluator group's former spelling) selects evaluators=[NAME]; none: nothing."""
    former = compose_config([f"evaluator={option}"])
    today = compose_config([f"evaluators=[{option}]" if option != "none" else "evaluators=[]"])
    assert former.get("evaluators") == today.get("evaluators")
    assert list(former.get("evaluators") or {}) == ([] if option == "none" else [option])
    OmegaConf.to_container(today, resolve=True)  # every interpolation resolves
    assert former.optimized_metric == today.optimized_metric


def test_default_job_is_minilm_mnrl_on_bundled_example():
    cfg = compose_config([])
    assert cfg.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.loss._target_.endswith(".MultipleNegativesRankingLoss")
    assert cfg.data.name == "example"
    assert (REPO_ROOT / "pipeline/data/example/train.csv").is_file()
    assert cfg.data.local_dir == str(REPO_ROOT / "pipeline/data/example")
    assert list(cfg.stages) == ["load", "train", "evaluate"]
    # the default store is absolute, under the repo, whatever the cwd
    assert cfg.tracking.uri == f"sqlite:///{REPO_ROOT}/mlruns/mlflow.db"


def test_loss_targets_are_current_sentence_transformers_classes():
    import importlib
    import warnings

    for option in options("loss"):
        cfg = compose_config([f"loss={option}"])
        module, _, name = cfg.loss._target_.rpartition(".")
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            cls = getattr(importlib.import_module(module), name)
        assert cls.__name__ == name


def test_gist_losses_bring_their_guide_and_smoke_shrinks_it():
    assert compose_config(["loss=gist"]).guide.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert compose_config(["loss=cached_gist", "debug=smoke"]).guide.architecture.hidden_size == 32
    assert compose_config([]).get("guide") is None and compose_config([]).get("miner") is None


@pytest.mark.parametrize("key", ["guide", "miner"])
def test_guide_and_miner_are_model_options_placed_at_their_key(key):
    """model@guide=NAME: any option of conf/model/, as it is (no file of its own per option)."""
    for option in options("model"):
        placed = OmegaConf.to_container(compose_config([f"model@{key}={option}"])[key])
        model = OmegaConf.to_container(compose_config([f"model={option}"]).model)
        assert placed == {k: v for k, v in model.items() if k != "peft"}  # peft: the trained model's own option
    for option in options(key):  # the former spelling of two of them: an alias, wherever else it is chosen
        former = compose_config(["loss=gist", "debug=smoke", f"{key}={option}"])[key]
        assert former == compose_config(["loss=gist", "debug=smoke", f"model@{key}={option}"])[key]
        assert former.name_or_path == compose_config([f"model={option}"]).model.name_or_path


def test_smoke_keeps_loss_and_evaluator_and_shrinks_the_rest():
    plain, smoke = compose_config([]), compose_config(["debug=smoke"])
    assert smoke.loss == plain.loss and smoke.evaluators == plain.evaluators and smoke.stages == plain.stages
    assert smoke.model.architecture.num_hidden_layers == 2 and smoke.training.max_steps == 2 and smoke.smoke


def test_cfg_job_prints_config_without_importing_torch():
    code = (
        "import sys, runpy; sys.argv=['pipeline','--cfg','job'];"
        "\ntry: runpy.run_module('pipeline', run_name='__main__')\nexcept SystemExit: pass"
        "\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "MultipleNegativesRankingLoss" in out.stdout


def test_a_declared_default_is_written_once_and_composed_into_every_job():
    """Each pipeline setting's default is its declaration (settings.declared_defaults, composed first): the
    default job holds every one, conf/config.yaml repeats none, and one no YAML file names can still be set
    from the command line (a new setting is one field in settings.py, and its use)."""
    from pipeline.stages.settings import declared_defaults

    def leaves(node: dict, prefix: str = "") -> dict:
        found = {}
        for key, value in node.items():
            found.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return found

    composed = leaves(OmegaConf.to_container(compose_config([]), resolve=False))
    declared = leaves(declared_defaults())
    assert {path: composed[path] for path in declared} == declared
    assert set(OmegaConf.load(CONF_DIR / "config.yaml")) == {"defaults", "hydra"}
    written = [p.read_text() for p in [*CONF_DIR.rglob("*.yaml"), *(REPO_ROOT / "experiments").rglob("*.yaml")]]
    assert not any("chance_tolerance" in text for text in written)  # declared only
    assert compose_config(["guard.chance_tolerance=0.01"]).guard.chance_tolerance == 0.01

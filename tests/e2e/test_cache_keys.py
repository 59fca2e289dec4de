"""Every cache key follows every config leaf that can change its value.

For each cache (the baseline, the process model and data caches, the mined-set cache) every leaf of the
composed config (``JobSpec.leaves``: generated from the config, not listed here) is changed to another
value, and either the key changes, or the leaf is declared not to matter for that cache (the
``NOT_KEYED`` mappings beside each key function) and the value a job would reuse equals one computed
fresh with the changed config. Keys are computed on real loaded tiny objects. The declared leaves are
changed together: halving the group finds those that move the key anyway (the seed of a model built from
a config moves its weights), and one fresh computation with all the others changed at once must equal
the reused value.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from omegaconf import OmegaConf

from pipeline import REPO_ROOT
from pipeline.runtime.offline import resolve_model
from pipeline.stages import baseline, build, load, mine, reuse, settings
from pipeline.stages.spec import config_leaves, read_spec
from tests.conftest import compose_config

SMOKE = ["debug=smoke", "hardware.packing=false", "tracking.log_model=false"]
# Leaves read where the generic change below would not be valid, or would not show a difference: another value.
VALID = {
    "optimized_metric": "sts-dev_pearson_cosine",
    "loss._target_": "sentence_transformers.sentence_transformer.losses.CachedMultipleNegativesRankingLoss",
    "loss.similarity_fct.path": "sentence_transformers.util.dot_score",
    "loss.similarity_fct._target_": "hydra.utils.get_object",
    "tracking.uri": "sqlite:///elsewhere.db",
    "model.max_seq_length": 4,  # the smoke rows are shorter than 64 tokens: 65 would truncate nothing
    "model.tokenizer": resolve_model("sentence-transformers/all-MiniLM-L6-v2", key="model.tokenizer"),  # a folder
    "training.max_steps": 7,  # -1 + 1 would train nothing (settings.Training.rules refuse it)
    "loss.matryoshka_dims": [16],
    "loss.matryoshka_weights": [1.0],
    "model.peft.target_modules": ["query"],
    "evaluators.sts.score_range": [0, 5],
    "evaluators.sts.primary_metric": "pearson_cosine",
    "evaluators.sts.evaluator._target_": "sentence_transformers.evaluation.EmbeddingSimilarityEvaluator",  # same class
    "evaluators.sts.evaluator.main_similarity": "dot",
    "evaluators.sts.evaluator.similarity_fn_names": ["cosine", "dot"],
    "data.prompts": {"anchor": "query: "},
    "data.train_columns": ["anchor", "positive", "negative"],
    # drop removes train rows that duplicate evaluation rows: with other evaluator columns it drops some, and
    # the keys follow the rows (as they should) though neither leaf moves them alone
    "data.leakage": "off",
}


def declaration(path: str) -> Any:
    """The declared type of a leaf (``pipeline.stages.settings``), or None for a library's leaf."""
    cls, parts, index = settings.Job, path.split("."), 0
    while index < len(parts):
        fields = settings.declared(cls)
        if parts[index] not in fields:
            return None
        kind, _ = fields[parts[index]]
        index += 1
        if index == len(parts):
            return settings.unwrap(kind)[0]
        child, each = settings.node_class(kind), settings.each_class(kind)
        if child is None and each is None:
            return None
        cls, index = (each, index + 1) if each else (child, index)
    return None


def changed(path: str, value: Any) -> Any:
    """Another value of the same kind: another of a closed choice's values (its declaration), else by type."""
    if path in VALID:
        return VALID[path]
    kind = declaration(path)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        # a one-value choice (hardware.training_attention: eager or null): its other value is null
        return next((choice.value for choice in kind if choice.value != str(value).lower()), None)
    if value is None and kind is str:
        return "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return f"{value}x"
    if value is None:
        return 1
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else [*value, *value] or ["x"]
    return {"x": "y"}


# Leaves bound by a rule between them (settings.Hardware.rules: the machine's index below the machines,
# machine 0's address with several, processes divisible by machines): changed together or not at all.
TOGETHER = ("hardware.num_processes", "hardware.num_machines", "hardware.machine_rank", "hardware.main_process_ip")


def with_changed(cfg, paths: list[str]):
    """A copy of the composed config with each of ``paths`` changed (and the leaves bound to one of them)."""
    if any(path in TOGETHER for path in paths):
        paths = [*paths, *(path for path in TOGETHER if path not in paths)]
    leaves, out = config_leaves(cfg), copy.deepcopy(cfg)
    for path in paths:
        OmegaConf.update(out, path, changed(path, leaves[path]), merge=False)
    return out


def split_by_declaration(cfg, declared: Callable[[str], bool], keyed: Callable[[dict], dict]) -> list[str]:
    """Check each leaf that is not declared: changing it changes the keyed part of the config (and so the
    key); return the declared ones."""
    base = keyed(config_leaves(cfg))
    found = []
    for path in config_leaves(cfg):
        if declared(path):
            found.append(path)
        else:
            assert keyed(config_leaves(with_changed(cfg, [path]))) != base, f"{path}: keyed, yet the key ignores it"
    assert found, "nothing declared: nothing reused to check"
    return found


def unmoved(cfg, paths: list[str], key: Callable, base_key: str) -> list[str]:
    """The leaves of ``paths`` whose change leaves the key as it is, found by halving the group."""
    if key(with_changed(cfg, paths)) == base_key:
        return paths
    if len(paths) == 1:
        return []  # the key follows this one: nothing is reused
    half = len(paths) // 2
    return unmoved(cfg, paths[:half], key, base_key) + unmoved(cfg, paths[half:], key, base_key)


def reused_paths(cfg, paths: list[str], key: Callable, base_key: str) -> list[str]:
    """The declared leaves a job would reuse the value across (all of them changed at once)."""
    same = unmoved(cfg, paths, key, base_key)
    assert same and key(with_changed(cfg, same)) == base_key, same
    return same


# ----------------------------------------------------------------------------------------------
# The baseline
# ----------------------------------------------------------------------------------------------


def scored_baseline(cfg, output_dir, score: bool) -> tuple[str, dict[str, float] | None]:
    """(the baseline key, the metrics computed fresh when ``score``) of a composed config, as
    ``job.baseline_step`` computes them, on the model and evaluators ``job.build_stage`` builds."""
    from pipeline import job
    from pipeline.runtime import hardware, packing
    from pipeline.stages.evaluate import evaluate

    spec = read_spec(cfg)
    spec = dataclasses.replace(spec, stages=dataclasses.replace(spec.stages, train=False))  # no loss built
    data, _ = load.shared_data(spec)
    plan = job.Plan(spec, data, hardware.resolve_machine(spec.hardware, spec.training), None)
    hardware.configure_threads(plan.machine)  # as preflight does
    built = job.build_stage(plan)
    scored = job.final_evaluators(spec, built)
    key = baseline.baseline_key(built.model, job.baseline_scoring(plan, built, list(scored)), spec.leaves)
    if not score:
        return key, None
    with hardware.autocast(plan.machine.precision, built.model.device.type), packing.uncounted(built.packer):
        return key, evaluate(built.model, scored, output_dir).metrics


@pytest.mark.slow
def test_the_baseline_key_follows_every_leaf_that_changes_the_baseline(tmp_path):
    cfg = compose_config(SMOKE)
    declared = split_by_declaration(
        cfg,
        lambda path: reuse.not_keyed(path, baseline.NOT_KEYED, baseline.KEPT),
        lambda leaves: reuse.keyed_leaves(leaves, baseline.NOT_KEYED, baseline.KEPT),
    )
    base_key, base_metrics = scored_baseline(cfg, tmp_path / "base", score=True)
    same = reused_paths(cfg, declared, lambda c: scored_baseline(c, tmp_path / "key", score=False)[0], base_key)
    assert "seed" not in same  # a model built from a config: the seed moves its weights, and the key
    _, fresh = scored_baseline(with_changed(cfg, same), tmp_path / "fresh", score=True)
    assert fresh == base_metrics, f"one of {same} is declared not to change the baseline, but does"


# ----------------------------------------------------------------------------------------------
# The process model cache
# ----------------------------------------------------------------------------------------------


def same_model(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    weights = sa.keys() == sb.keys() and all((sa[name] == sb[name]).all() for name in sa)
    return weights and a.max_seq_length == b.max_seq_length and repr(a) == repr(b)


@pytest.mark.slow
def test_the_model_key_follows_every_leaf_that_changes_the_loaded_model():
    """``load_model`` is given the model node and the seed alone: a leaf outside them leaves its inputs,
    so its key and what it loads, as they are; under the node, only MODEL_NOT_KEYED may leave the key."""
    cfg = compose_config(SMOKE)
    base_key, cached = build.model_key(cfg.model, cfg.seed, "model"), build.load_model(cfg.model, cfg.seed)
    declared = []
    for path in config_leaves(cfg):
        variant = with_changed(cfg, [path])
        if not path.startswith("model.") and path != "seed":
            assert (variant.model, variant.seed) == (cfg.model, cfg.seed), path
        elif build.model_key(variant.model, variant.seed, "model") == base_key:
            assert reuse.not_keyed(path.removeprefix("model."), build.MODEL_NOT_KEYED), path
            declared.append(path)
    assert declared
    fresh = with_changed(cfg, declared)
    assert build.model_key(fresh.model, fresh.seed, "model") == base_key
    assert same_model(build.load_model(fresh.model, fresh.seed), cached)


# ----------------------------------------------------------------------------------------------
# The process data cache
# ----------------------------------------------------------------------------------------------


def rows(data) -> dict[str, str]:
    return {name: baseline.rows_digest(split.dataset) + split.fingerprint for name, split in data.all_splits()}


@pytest.mark.slow
def test_the_data_key_follows_every_leaf_that_changes_the_data_read(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "pipeline" / "data" / "example", folder)
    cfg = compose_config(["model=tiny", f"data.local_dir={folder}", "data.max_train_rows=40"])
    declared = split_by_declaration(
        cfg,
        lambda path: reuse.not_keyed(path, load.DATA_NOT_KEYED, load.DATA_KEPT),
        lambda leaves: reuse.keyed_leaves(leaves, load.DATA_NOT_KEYED, load.DATA_KEPT),
    )
    base_key, cached = load.data_key(read_spec(cfg)), rows(load.load_data(read_spec(cfg)))
    same = reused_paths(cfg, declared, lambda c: load.data_key(read_spec(c)), base_key)
    assert rows(load.load_data(read_spec(with_changed(cfg, same)))) == cached


# ----------------------------------------------------------------------------------------------
# The mined-set cache
# ----------------------------------------------------------------------------------------------


def mined(cfg, folder):
    """(the mined set's key, the set mined fresh when ``folder`` is given) of a composed config."""
    from pipeline import job

    spec = read_spec(cfg)
    data = load.load_data(spec)
    inputs = job.mine_inputs(spec, data, build.miner_key(spec))
    if folder is None:
        return mine.cache_key(inputs), None
    model = build.load_model(spec.miner or spec.model, spec.seed)
    options = OmegaConf.merge(spec.mine, {"cache_dir": str(folder)})
    result = mine.mine(data.train_splits["train"], lambda: model, options, data.candidates, inputs)
    return mine.cache_key(inputs), result.split.dataset.to_dict()


@pytest.mark.slow
def test_the_mine_key_follows_every_leaf_that_changes_the_mined_set(tmp_path):
    cfg = compose_config([*SMOKE, "stages=[load,mine,train,evaluate]"])
    declared = split_by_declaration(
        cfg,
        lambda path: reuse.not_keyed(path, mine.NOT_KEYED),
        lambda leaves: reuse.keyed_leaves(leaves, mine.NOT_KEYED),
    )
    base_key, base_rows = mined(cfg, tmp_path / "base")
    same = reused_paths(cfg, declared, lambda c: mined(c, None)[0], base_key)
    assert mined(with_changed(cfg, same), tmp_path / "fresh")[1] == base_rows

"""Read a config logged by other code in today's shape: the lenient reading ``pipeline.rerun`` and
``pipeline.resume`` replay a run from.

A logged ``config.yaml`` may come from older code. :func:`translate_logged` reads nodes of an older shape in
today's (the one ``evaluator`` node, before evaluators became one group); :func:`drop_unknown` removes the
keys no schema has (``pipeline.stages.schema``), one warning each; :func:`fill_missing` sets the keys
every job is given (their declared defaults) that the run lacks to today's default, one warning each. Applied in
that order, the result passes the strict key check a new job passes. Writes nothing to MLflow.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from pipeline import CONF_DIR
from pipeline.stages import settings
from pipeline.stages.schema import unknown_keys

log = logging.getLogger(__name__)

# The keys an evaluator node held beside its class's arguments before evaluators became one group (issue 29).
_OLD_EVALUATOR_KEYS = ("name", "columns", "primary_metric", "splits", "score_range", "label", "corpus")


def read_logged(cfg: DictConfig, origin: str) -> DictConfig:
    """The logged config in today's shape: translated, without the keys older code had, with today's
    defaults for the keys newer than the run (each change warned, naming ``origin``)."""
    return fill_missing(drop_unknown(translate_logged(cfg, origin), origin), origin)


def translate_logged(cfg: DictConfig, origin: str) -> DictConfig:
    """A config logged in an older shape, in today's: the one ``evaluator`` node and each ``evaluators.NAME``
    of pipeline keys mixed with class arguments become ``evaluators.NAME: {name, columns, ..., evaluator:
    {_target_, class arguments}}``, ``evaluator`` first (its name as key; ``_target_: null`` was none); the
    hand-copied ``metrics`` lists go (the class says what it logs). A config in today's shape comes back
    as it is. One warning when something changed. Runs before :func:`drop_unknown` and :func:`fill_missing`."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    old = plain.pop("evaluator", None)
    listed = plain.get("evaluators") or {}
    mixed = [key for key, node in listed.items() if isinstance(node, dict) and "evaluator" not in node]
    if old is None and not mixed:
        return cfg
    evaluators = {str(old["name"]): old} if old and old.get("_target_") else {}
    evaluators.update(listed)
    plain["evaluators"] = {
        key: node if "evaluator" in node else _split_evaluator(node) for key, node in evaluators.items()
    }
    log.warning("%s: evaluator nodes of an older shape read as evaluators.%s", origin, ",".join(plain["evaluators"]))
    translated = OmegaConf.create(plain)
    OmegaConf.set_struct(translated, OmegaConf.is_struct(cfg))
    return translated


def _split_evaluator(node: dict) -> dict:
    """An older evaluator node: the pipeline's keys outside, the class and its arguments inside ``evaluator``."""
    outside = {key: node[key] for key in _OLD_EVALUATOR_KEYS if key in node}
    inside = {key: value for key, value in node.items() if key not in (*_OLD_EVALUATOR_KEYS, "metrics")}
    return {**outside, "evaluator": inside}


def drop_unknown(cfg: DictConfig, origin: str) -> DictConfig:
    """The config without the keys no schema has (a run logged by older code), one warning per key."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for unknown in unknown_keys(cfg):
        *parents, name = unknown.path.split(".")
        node = plain
        for parent in parents:
            node = node[parent]
        del node[name]
        log.warning("%s: key %r is no longer a config key: ignored", origin, unknown.path)
    kept = OmegaConf.create(plain)
    OmegaConf.set_struct(kept, OmegaConf.is_struct(cfg))
    return kept


def fill_missing(cfg: DictConfig, origin: str) -> DictConfig:
    """The config with the keys every job is given (the declared defaults, ``settings.declared_defaults``,
    and ``conf/config.yaml``'s own values) that it lacks (a run logged by older code, before the key
    existed) set to today's default, one warning per key or node; a key declared with ``logged_before``
    (a speed setting whose default changes the draws) gets the value runs had before it existed."""
    root = OmegaConf.load(CONF_DIR / "config.yaml")
    own = OmegaConf.masked_copy(root, [k for k in root if k not in ("defaults", "hydra")])
    today = OmegaConf.merge(OmegaConf.create(settings.declared_defaults()), own)
    defaults = OmegaConf.merge(OmegaConf.create(settings.declared_defaults(logged=True)), own)
    plain = OmegaConf.to_container(cfg, resolve=False)
    for path in _missing(OmegaConf.to_container(defaults, resolve=False), plain, ""):
        value, default = OmegaConf.select(defaults, path), OmegaConf.select(today, path)
        if value == default:
            log.warning("%s: key %r was not logged: today's default %s used", origin, path, value)
        else:
            log.warning("%s: key %r was not logged: %s used, as before the key existed (today's default: %s)",
                        origin, path, value, default)  # fmt: skip
    filled = OmegaConf.merge(defaults, OmegaConf.create(plain))
    OmegaConf.set_struct(filled, OmegaConf.is_struct(cfg))
    return filled


def _missing(defaults: dict, logged: dict, prefix: str) -> list[str]:
    """Dot paths of ``defaults`` that ``logged`` lacks (a missing node once, not each of its keys)."""
    found = []
    for key, value in defaults.items():
        if key not in logged:
            found.append(f"{prefix}{key}")
        elif isinstance(value, dict) and isinstance(logged[key], dict):
            found += _missing(value, logged[key], f"{prefix}{key}.")
    return found

"""The config's closed nodes and the keys each may hold: an unknown key is refused wherever it was written.

Hydra refuses an unknown key on the command line (struct mode), but a config file (an experiment, a group
option) may add keys freely: ``early_stoping.patience: 2`` would compose, train and be ignored.
:func:`check_keys` walks the composed config against :data:`SCHEMA` and raises
:class:`pipeline.PipelineError` naming the file that brought the key, the key and the nearest valid one.

- The pipeline's own nodes (``guard``, ``hardware``, ``tracking``, ...) are closed: their keys are the
  fields declared in ``pipeline.stages.settings`` (:data:`SCHEMA` derives from it).
- A library's arguments are checked by the library: a ``_target_`` node's keyword arguments are bound to
  the class's signature (``inspect.signature(...).bind_partial``), past the keys the pipeline reads itself
  (``settings.LossOptions``; an evaluator's are outside its ``evaluator`` node); ``training.*`` are the
  ``SentenceTransformerTrainingArguments`` fields (their values: its ``__post_init__``, ``stages.train``).
- Mappings the user names (``data.columns``, ``data.prompts``, ``model.architecture``) are open.

:func:`translate_logged`, :func:`drop_unknown` and :func:`fill_missing` are the lenient mode for replaying runs
logged by other code: nodes of an older shape are read in today's (the one ``evaluator`` node);
unknown keys are reported (one warning each) and removed; keys ``conf/config.yaml`` gives every job
that the run lacks are reported and set to today's default. :func:`check_option` checks one option file
of a group (a sweep over ``experiment=a,b``), :func:`check_choice` that the option is a file of its group at
all. Writes nothing to MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import CONF_DIR, PipelineError
from pipeline.stages import settings

log = logging.getLogger(__name__)

VALUE = None  # a leaf: any value (a mapping too, e.g. data.columns), checked where it is read
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


@dataclasses.dataclass(frozen=True)
class Target:
    """A ``_target_`` node: the pipeline's own keys, and the keyword arguments the target takes."""

    own: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Fields:
    """A library's arguments dataclass (``training``: ``SentenceTransformerTrainingArguments``): its field names."""

    cls: str


@dataclasses.dataclass(frozen=True)
class Each:
    """Children the user names (``data.train_sets.NAME``, ``evaluators.NAME``), each of one schema."""

    schema: Any


def schema_of(cls: type) -> dict[str, Any]:
    """A declared node's keys (``pipeline.stages.settings``): a sub-node's own schema, a library node's
    marker (``_target_`` nodes: the pipeline's keys beside the class's arguments; ``training``: the
    arguments dataclass; ``hydra``: Hydra's), ``VALUE`` for a leaf."""
    schema: dict[str, Any] = {}
    for key, (kind, meta) in settings.declared(cls).items():
        child, each, library = settings.node_class(kind), settings.each_class(kind), meta.get("library")
        if library == "target":
            target = Target(own=tuple(settings.declared(child or each)) if child or each else ())
            schema[key] = Each(target) if each else target
        elif library == "hydra":
            schema[key] = VALUE
        elif library:
            schema[key] = Fields(library)
        elif child is not None:
            schema[key] = schema_of(child)
        elif each is not None:
            schema[key] = Each(schema_of(each))
        else:
            schema[key] = VALUE
    return schema


SCHEMA: dict[str, Any] = schema_of(settings.Job)


@dataclasses.dataclass(frozen=True)
class Unknown:
    """A key no schema has: its dot path, the valid keys beside it, and why a library refused it."""

    path: str
    valid: tuple[str, ...]
    reason: str | None = None

    def describe(self, source: str | None) -> str:
        name = self.path.rsplit(".", 1)[-1]
        near = difflib.get_close_matches(name, self.valid, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(sorted(self.valid))}"
        where = f"{source}: " if source else "command line: "
        reason = f": {self.reason}" if self.reason else ""
        return f"{where}unknown key {self.path!r} ({hint}){reason}"


def check_keys(cfg: DictConfig, choices: dict[str, Any] | None = None, roots: list[Path] | None = None) -> None:
    """Refuse the first unknown key of the composed config, naming the config file that brought it (found
    through Hydra's ``choices``, group@package -> option, in Hydra's config search path) or the command line."""
    unknown = unknown_keys(cfg)
    if unknown:
        raise PipelineError(unknown[0].describe(source_file(unknown[0].path, choices or {}, roots or config_roots())))


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


# The keys an evaluator node held beside its class's arguments before evaluators became one group (issue 29).
_OLD_EVALUATOR_KEYS = ("name", "columns", "primary_metric", "splits", "score_range", "label", "corpus")


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


def fill_missing(cfg: DictConfig, origin: str) -> DictConfig:
    """The config with the keys that ``conf/config.yaml`` gives every job and it lacks (a run logged by
    older code, before the key existed) set to today's default, one warning per key or node."""
    root = OmegaConf.load(CONF_DIR / "config.yaml")
    defaults = OmegaConf.masked_copy(root, [k for k in root if k not in ("defaults", "hydra")])
    plain = OmegaConf.to_container(cfg, resolve=False)
    for path in _missing(OmegaConf.to_container(defaults, resolve=False), plain, ""):
        log.warning(
            "%s: key %r was not logged: today's default %s used", origin, path, OmegaConf.select(defaults, path)
        )
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


def unknown_path(path: str) -> Unknown | None:
    """The first unknown part of the dot key ``path`` (an override Hydra refused), or None."""
    node: dict = {}
    leaf = node
    for part in path.split("."):
        leaf[part] = {}
        leaf = leaf[part]
    found: list[Unknown] = []
    _walk(node, SCHEMA, "", found)
    return found[0] if found else None


def unknown_keys(cfg: DictConfig) -> list[Unknown]:
    found: list[Unknown] = []
    _walk(OmegaConf.to_container(cfg, resolve=False), SCHEMA, "", found)
    return found


def _walk(node: Any, schema: Any, prefix: str, found: list[Unknown]) -> None:
    if not isinstance(node, dict) or schema is VALUE:
        return
    if isinstance(schema, Each):
        for name, child in node.items():
            _walk(child, schema.schema, f"{prefix}{name}.", found)
    elif isinstance(schema, Target):
        _check_target(node, schema, prefix, found)
    elif isinstance(schema, Fields):
        from hydra.utils import get_class

        cls = get_class(schema.cls)
        fields = tuple(f.name for f in dataclasses.fields(cls))
        reason = f"not a {cls.__name__} field"
        found += [Unknown(f"{prefix}{key}", fields, reason) for key in node if key not in fields]
    else:
        for key, child in node.items():
            if key in schema:
                _walk(child, schema[key], f"{prefix}{key}.", found)
            else:
                found.append(Unknown(f"{prefix}{key}", tuple(schema)))


def _check_target(node: dict, schema: Target, prefix: str, found: list[Unknown]) -> None:
    """Bind the node's keyword arguments to its ``_target_``'s signature; nested ``_target_`` nodes too."""
    from hydra.utils import get_object

    kwargs = {k: v for k, v in node.items() if k not in (*HYDRA_KEYS, *schema.own)}
    for key, value in kwargs.items():
        if isinstance(value, dict) and "_target_" in value:
            _check_target(value, Target(), f"{prefix}{key}.", found)
    if not node.get("_target_"):
        return
    try:
        target = get_object(str(node["_target_"]))
        signature = inspect.signature(target)
    except (ImportError, ValueError, TypeError):
        return  # a target that does not load: building it says so (stages.build)
    try:
        signature.bind_partial(**kwargs)
    except TypeError:
        params = [n for n, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        target_name = str(node["_target_"]).rsplit(".", 1)[-1]
        for key in [k for k in kwargs if k not in params]:
            reason = f"{target_name} takes no argument {key!r}"
            found.append(Unknown(f"{prefix}{key}", (*params, *schema.own), reason))


def config_roots(sources: Any = None) -> list[Path]:
    """The folders Hydra composed from (``--config-path``, ``hydra.searchpath``: ``sources``, else the
    running job's ``hydra.runtime.config_sources``), else ``conf/``."""
    from hydra.core.hydra_config import HydraConfig

    if sources is None and HydraConfig.initialized():
        sources = HydraConfig.get().runtime.config_sources
    return [Path(s.path) for s in sources or [] if s.schema == "file"] or [CONF_DIR]


def check_choice(group: str, option: str, known: list[str]) -> None:
    """Refuse an option that is no file of its config group (a sweep over ``loss=mnrl,cosnet``), naming the
    nearest options; ``null`` (no option, for an optional group) passes."""
    if option in known or option == "null":
        return
    near = difflib.get_close_matches(option, known, n=3, cutoff=0.5)
    raise PipelineError(
        f"command line: the sweep's option {option!r} is no file of group {group!r} (nearest: "
        f"{', '.join(repr(n) for n in near) or 'none'}; every option: {', '.join(sorted(known))}): fix the option."
    )


def check_option(group: str, option: str, roots: list[Path]) -> None:
    """Refuse an unknown key in one option file of a config group (``experiment``, ``model``...) as
    :func:`check_keys` would in the config composed with it: a sweep over ``experiment=a,b`` checks
    every file before any job."""
    for file, package in chosen_files({group: option}, roots)[:-1]:  # the option and the files it includes
        content = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
        content.pop("defaults", None)
        for part in reversed([p for p in package.split(".") if p]):
            content = {part: content}
        found: list[Unknown] = []
        _walk(content, SCHEMA, "", found)
        if found:
            where = str(file.relative_to(Path.cwd())) if file.is_relative_to(Path.cwd()) else str(file)
            raise PipelineError(found[0].describe(where))


def source_file(path: str, choices: dict[str, Any], roots: list[Path]) -> str | None:
    """The config file (relative to the working directory when under it) that sets the dot key ``path``."""
    for file, package in chosen_files(choices, roots):
        content = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
        keys = path.split(".")
        if package:
            prefix = package.split(".")
            if keys[: len(prefix)] != prefix:
                continue
            keys = keys[len(prefix) :]
        if _has(content, keys):
            return str(file.relative_to(Path.cwd())) if file.is_relative_to(Path.cwd()) else str(file)
    return None


def chosen_files(choices: dict[str, Any], roots: list[Path]) -> list[tuple[Path, str]]:
    """(file, package) of every config file the job was composed from: the patches (experiment, debug,
    sweep) first, then the group options and the files they include, then ``conf/config.yaml``."""
    first = ("experiment", "debug", "sweep")
    picked = sorted(
        ((k, v) for k, v in choices.items() if isinstance(v, str) and not k.startswith("hydra/")),
        key=lambda kv: (kv[0] not in first, first.index(kv[0]) if kv[0] in first else 0),
    )
    files: list[tuple[Path, str]] = []
    for key, option in picked:
        group, _, package = key.partition("@")
        found = [root / group / f"{option}.yaml" for root in roots if (root / group / f"{option}.yaml").is_file()]
        if found:
            _add_file(found[0], package or group.replace("/", "."), files)
    primary = [root / "config.yaml" for root in roots if (root / "config.yaml").is_file()]
    return files + [(file, "") for file in primary[:1]]


def _add_file(file: Path, package: str, files: list[tuple[Path, str]]) -> None:
    """The file and the options of its own group it includes (``defaults: [cpu, _self_]``)."""
    if not file.is_file():
        return
    header = next((line for line in file.read_text().splitlines() if line.startswith("# @package ")), None)
    if header:
        package = header.split(maxsplit=2)[2].strip().removeprefix("_global_").lstrip(".")
    files.append((file, package))
    for entry in OmegaConf.load(file).get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            _add_file(file.parent / f"{entry}.yaml", package, files)


def _has(content: Any, keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(content, dict) or key not in content:
            return False
        content = content[key]
    return True

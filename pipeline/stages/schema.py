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

:func:`check_option` checks one option file of a group as composed (a sweep over ``experiment=a,b``).
Which file brought a key is :mod:`pipeline.stages.config_files`'s job; reading a config logged by older
code leniently is :mod:`pipeline.logged_config`'s. Writes nothing to MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.stages import settings
from pipeline.stages.config_files import chosen_files, config_roots, shown, source_file

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
            raise PipelineError(found[0].describe(shown(file)))

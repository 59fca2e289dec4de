"""Hydra's config files: which files a job was composed from, and which of them brought a key.

A key refused by :mod:`pipeline.stages.schema` is named with the file that wrote it (:func:`source_file`);
a sweep checks, before any job, that each swept option is a file of its group (:func:`check_choice`) and
reads that file and the files it includes (:func:`chosen_files`). The files are found through Hydra's
``choices`` (group@package -> option) in Hydra's config search path (:func:`config_roots`). Writes nothing
to MLflow.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline import CONF_DIR, PipelineError


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


def shown(file: Path) -> str:
    """A config file as a message names it: relative to the working directory when under it."""
    return str(file.relative_to(Path.cwd())) if file.is_relative_to(Path.cwd()) else str(file)


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
            return shown(file)
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

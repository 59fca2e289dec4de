"""Write ``docs/config.md``, the config reference, from the declarations (``pipeline.stages.settings``).

Every key the pipeline owns: its type and allowed values, its value in the default job (as ``conf/``
composes it, interpolations unresolved; a hardware key's value on the gpu profile too, where it differs)
and its help. Run ``python -m pipeline.schema_docs`` (``make docs``) after changing a declaration or a
default; ``tests/unit/test_config_reference.py`` fails while the page is stale. Writes no MLflow data.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from omegaconf import OmegaConf

from pipeline import CONF_DIR, REPO_ROOT
from pipeline.stages import settings

PAGE = REPO_ROOT / "docs" / "config.md"
HEADER = """# Config reference

Generated from the declarations in `pipeline/stages/settings.py` by `python -m pipeline.schema_docs`
(`make docs`); do not edit by hand. Each key: what it allows (a value outside it is refused before any
run, in one line naming the key), its value in the default job (`python -m pipeline` with no overrides:
`conf/config.yaml` and the options it picks; `gpu:` where `hardware=gpu` differs), and what it does.
Nodes marked *library* also take the arguments of the class they name (`_target_`), checked against
its signature; `training.*` are the fields of sentence-transformers' `SentenceTransformerTrainingArguments`
(names unchanged, conf/training/default.yaml).
"""


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def render() -> str:
    """The reference page's text."""
    default, gpu = compose([]), compose(["hardware=gpu"])
    sections = [HEADER]
    rows = _rows(settings.Job, "", default, gpu)
    sections.append(_table("Top-level keys", settings.Job, [r for r in rows if r[0] is None]))
    shown: dict[type, str] = {}
    for key, (kind, meta) in settings.declared(settings.Job).items():
        child = settings.node_class(kind) or settings.each_class(kind)
        if child is None:
            continue
        path = f"{key}.NAME" if settings.each_class(kind) else key
        if child in shown:  # a model placed at another key (guide, miner), eval_data: the same keys and rules
            sections.append(f"## `{path}`\n\n{meta['help']}: the keys of `{shown[child]}`, under `{path}.`\n")
            continue
        shown[child] = path
        title = f"`{path}`" + (" (library)" if meta.get("library") else "")
        sections.append(_table(title, child, [r for r in rows if r[0] == key]))
    return "\n".join(sections)


def _rows(cls: type, prefix: str, default: dict, gpu: dict) -> list[tuple[str | None, str, str, str, str]]:
    """(top-level node or None, dot key, allowed, default, help) for every declared leaf under ``cls``."""
    rows = []
    for key, (kind, meta) in settings.declared(cls).items():
        path = f"{prefix}{key}"
        child, each = settings.node_class(kind), settings.each_class(kind)
        if child is not None:
            rows += _rows(child, f"{path}.", default, gpu)
        elif each is not None:
            rows += _rows(each, f"{path}.NAME.", default, gpu)
        elif kind is Any and meta.get("library") == "target":  # a class node: its class, in the default job
            allowed = "`_target_` (a class) and its arguments, checked against its signature"
            rows.append((path.split(".")[0], path, allowed, _value(default, f"{path}._target_"), meta.get("help", "")))
        elif not (kind is Any and meta.get("library")):
            top = path.split(".")[0] if "." in path else None
            value = _value(default, path)
            if top == "hardware" and _value(gpu, path) != value:
                value += f" (gpu: {_value(gpu, path)})"
            rows.append((top, path, settings.describe(kind, meta), value, meta.get("help", "")))
    return rows


def _value(composed: dict, path: str) -> str:
    """The key's value as written (interpolations unresolved: the page reads the same on every machine);
    under ``NAME``, the first one's (``evaluators.sts``)."""
    node: Any = composed
    for part in path.split("."):
        if isinstance(node, dict) and part == "NAME" and node:  # one of several by name: the first
            part = next(iter(node))
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return f"`{_inline(node)}`"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _table(title: str, cls: type, rows: list[tuple]) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "").replace("\n", " ") if dataclasses.is_dataclass(cls) else ""
    lines = [f"## {title}", "", doc, "", "| key | allowed | default | help |", "|---|---|---|---|"]
    lines += [
        f"| `{path}` | {allowed} | {value} | {help_.replace('|', '/')} |" for _, path, allowed, value, help_ in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

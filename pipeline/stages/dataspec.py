"""The data nodes read into typed, frozen parts: where each set's rows come from and what trains on them.

:func:`read_data` runs once per job, inside ``spec.read_spec`` (after every value is checked against its
declaration, ``settings.DataSet``), for ``data`` and ``eval_data``. The load stage, the config checks, the
leakage audit and the guard read these parts, never the config node. Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.stages.leakage import Mode, Settings
from pipeline.stages.splits import LABEL_COLUMNS


@dataclass(frozen=True)
class DataSource:
    """One data set (``data``, ``eval_data``, each of ``data.train_sets``): where its rows come from."""

    key: str  # where the config holds it (``data``, ``data.train_sets.nli``): how errors name it
    name: str
    path: str | None  # Hugging Face Hub dataset id
    subset: str | None
    local_dir: str | None  # read before path
    optional_splits: tuple[str, ...]  # scored only when local_dir has them
    split_names: dict[str, str]  # split -> file stem or Hub split name (``data.splits``)
    renames: dict[str, str]  # our column -> the data's column (``data.columns``)
    train_columns: tuple[str, ...]  # in the loss's order
    negatives: str | None  # ``labelled``: the rows hold a ``negative`` column too
    max_train_rows: int | None
    corpus: str | None  # a larger retrieval corpus file
    train_transform: Any  # a ``_target_`` node (a dict) turning the loaded train rows into train_columns

    @property
    def layout(self) -> tuple[str, ...]:
        """The columns this set trains on: ``train_columns``, plus ``negative`` with judged negatives."""
        return self.train_columns + (("negative",) if self.negatives == "labelled" else ())

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.train_columns if c not in LABEL_COLUMNS)

    @property
    def from_hub(self) -> bool:
        return bool(self.path) and not self.local_dir

    def stem(self, split: str) -> str:
        """The file stem (local) or Hub split name a split is read from."""
        return self.split_names.get(split, split)


@dataclass(frozen=True)
class DataSpec(DataSource):
    """``data``: the training data, the train sets it names, the prompts and the leakage audit's settings."""

    named_sets: dict[str, DataSource] = field(default_factory=dict)  # ``data.train_sets``; empty: one set
    prompts: dict[str, str] = field(default_factory=dict)  # train column -> prompt (``data.prompts``)
    leakage: Settings = Settings(Mode.OFF, 1.0)

    @property
    def several(self) -> bool:
        """``data.train_sets`` names several train sets (trained on at once)."""
        return bool(self.named_sets)

    @property
    def train_sets(self) -> dict[str, DataSource]:
        """Name -> set: ``{"train": self}`` for one set, else ``data.train_sets`` by name."""
        return dict(self.named_sets) or {"train": self}

    @property
    def all_text_columns(self) -> tuple[str, ...]:
        """The text columns any train set trains on, first seen first."""
        return tuple(dict.fromkeys(c for source in self.train_sets.values() for c in source.text_columns))


def read_data(node: DictConfig) -> DataSpec:
    """``data``: its own set, its train sets by name, prompts and the leakage audit (a config composed
    without ``conf/config.yaml``'s ``data`` node: no audit)."""
    named = node.get("train_sets") or {}
    mode = node.get("leakage")
    return DataSpec(
        **_source_fields(node, "data"),
        named_sets={str(name): read_source(named[name], f"data.train_sets.{name}") for name in named},
        prompts={str(k): str(v) for k, v in (node.get("prompts") or {}).items()},
        leakage=Settings(Mode(str(mode)), float(node.leakage_threshold))
        if mode is not None
        else Settings(Mode.OFF, 1.0),
    )


def read_source(node: DictConfig, key: str) -> DataSource:
    """One data set's node (``eval_data``, ``data.train_sets.NAME``)."""
    return DataSource(**_source_fields(node, key))


def _source_fields(node: DictConfig, key: str) -> dict[str, Any]:
    def text(name: str) -> str | None:
        value = node.get(name)
        return None if value is None else str(value)

    transform = node.get("train_transform")
    return {
        "key": key,
        "name": str(node.get("name")),
        "path": text("path"),
        "subset": text("subset"),
        "local_dir": text("local_dir"),
        "optional_splits": tuple(str(s) for s in node.get("optional_splits") or ()),
        "split_names": {str(k): str(v) for k, v in (node.get("splits") or {}).items() if v is not None},
        "renames": {str(k): str(v) for k, v in (node.get("columns") or {}).items()},
        "train_columns": tuple(str(c) for c in node.get("train_columns") or ()),
        "negatives": text("negatives"),
        "max_train_rows": node.get("max_train_rows"),
        "corpus": text("corpus"),
        "train_transform": OmegaConf.to_container(transform, resolve=True)
        if OmegaConf.is_config(transform)
        else transform,
    }

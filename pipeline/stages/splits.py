"""What the load stage returns: splits with their source and fingerprint.

Shared by the load stage, the smoke sample, the build step and the job. Writes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

# Column names sentence-transformers treats as the loss's label rather than a text input.
LABEL_COLUMNS = ("score", "scores", "label", "labels")


@dataclass(frozen=True)
class Split:
    """One split as read: the rows, where they came from and a content fingerprint."""

    dataset: Any  # datasets.Dataset
    source: str
    fingerprint: str


@dataclass(frozen=True)
class LoadedData:
    """What the load stage read: the train split(s), the evaluation splits by name, and the dev
    split in the train layout when the trainer scores its loss on it.

    ``train`` is one :class:`Split`, or a dict of named splits when the data config names several
    train sets (``data.train_sets``); ``train_dataset`` is what the trainer takes either way.
    """

    train: Split | dict[str, Split] | None
    eval_splits: dict[str, Split] = field(default_factory=dict)
    eval_loss: Split | dict[str, Split] | None = None
    corpora: dict[str, Split] = field(default_factory=dict)  # evaluator name -> extra retrieval corpus
    candidates: list[str] | None = None  # the mine stage's candidate texts (None: the pairs' positives)
    leakage: Any = None  # the leakage audit's ``Audit`` (``warn``: a ``Running`` one; None: not run): ``leakage.found``

    @property
    def train_splits(self) -> dict[str, Split]:
        """The train split(s) by name: ``{"train": split}``, or ``{set name: split}`` for several."""
        return _named(self.train, "train")

    @property
    def train_dataset(self):
        """A ``datasets.Dataset``, or a ``DatasetDict`` of the named sets (the trainer then draws
        batches from them with ``training.multi_dataset_batch_sampler``)."""
        return _as_dataset(self.train)

    @property
    def eval_loss_dataset(self):
        """The dev split(s) in the train layout, for the trainer's ``eval_loss`` (None: not read)."""
        return _as_dataset(self.eval_loss)

    def all_splits(self):
        """(name, split) for every split read: the train set(s), then the evaluation splits."""
        yield from self.train_splits.items()
        yield from self.eval_splits.items()

    @property
    def fingerprint(self) -> str:
        parts = [(name if name == "train" else f"train.{name}", split) for name, split in self.train_splits.items()]
        parts += sorted(self.eval_splits.items())
        digest = hashlib.sha256()
        for name, split in parts:
            if split is not None:
                digest.update(f"{name}:{split.fingerprint};".encode())
        return digest.hexdigest()[:16]


def _named(splits: Split | dict[str, Split] | None, single: str) -> dict[str, Split]:
    if splits is None:
        return {}
    return dict(splits) if isinstance(splits, dict) else {single: splits}


def _as_dataset(splits: Split | dict[str, Split] | None):
    if isinstance(splits, dict):
        from datasets import DatasetDict

        return DatasetDict({name: split.dataset for name, split in splits.items()})
    return None if splits is None else splits.dataset

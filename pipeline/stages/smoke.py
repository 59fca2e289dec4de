"""The ``debug=smoke`` sample: a few rows of the bundled example in any recipe's column layout.

Lets every job and experiment run end to end in seconds with the tiny model. Writes nothing. Each split
takes its own rows (train, dev and test of one layout never share a row), so the leakage audit finds
in a smoke run only what the bundled example itself holds.
"""

from __future__ import annotations

import csv
import hashlib
import json

from pipeline import REPO_ROOT
from pipeline.stages.splits import LABEL_COLUMNS, Split

EXAMPLE_DIR = REPO_ROOT / "pipeline" / "data" / "example"
SMOKE_ROWS = 16
BLOCKS = {"train": 0, "dev": 1, "test": 2}  # which block of rows of a file each split takes (others: the next)


def first_row(name: str, rows: int) -> int:
    """Where split ``name`` (``train``, ``dev``, ``test``, ``train.<data key>``) starts in a file: in blocks of ``rows``."""
    return BLOCKS.get(name.split(".")[0], len(BLOCKS)) * rows


def smoke_split(columns: list[str], name: str) -> Split:
    """A few rows of the bundled example in the given column layout (for debug=smoke)."""
    from datasets import Dataset

    start = first_row(name, SMOKE_ROWS + 4)
    with open(EXAMPLE_DIR / "train.csv", newline="") as f:
        pairs = list(csv.DictReader(f))[start : start + SMOKE_ROWS + 4]
    # scored rows: dev and test from the top of their own files, any other split (train) past dev's
    start = 0 if name in ("dev", "test") else first_row(name, SMOKE_ROWS) + SMOKE_ROWS
    with open(EXAMPLE_DIR / ("test.csv" if name == "test" else "dev.csv"), newline="") as f:
        scored = list(csv.DictReader(f))[start : start + SMOKE_ROWS]
    text_columns = [c for c in columns if c not in LABEL_COLUMNS]
    rows: dict[str, list] = {c: [] for c in columns}
    for i in range(SMOKE_ROWS):
        if len(text_columns) < len(columns):  # scored layout: (text, text, score)
            texts = [scored[i]["sentence1"], scored[i]["sentence2"]]
            for column in columns:
                rows[column].append(
                    float(scored[i]["score"])
                    if column in LABEL_COLUMNS
                    else texts.pop(0)
                    if texts
                    else pairs[i]["anchor"]
                )
        else:  # anchor, positive, then negatives taken from other rows' positives
            texts = [pairs[i]["anchor"], pairs[i]["positive"]] + [pairs[i + k]["positive"] for k in range(1, 4)]
            for column, text in zip(columns, texts):
                rows[column].append(text)
    blob = json.dumps(rows, sort_keys=True).encode()
    return Split(
        Dataset.from_dict(rows), f"smoke sample ({name}: {', '.join(columns)})", hashlib.sha256(blob).hexdigest()[:16]
    )

"""A large (anchor, positive) train file for the data-scale benchmark: N pairs of 5-20 words drawn from the
STS Benchmark's vocabulary, with STSb's own dev and test splits beside it (so the default ``sts``
evaluator has real scored rows). The words are alphabetic, so the CSV needs no quoting.

    .venv/bin/python benchmarks/make_pairs.py --rows 1000000 --out /tmp/pairs-1m
    .venv/bin/python -m pipeline data=stsb data.local_dir=/tmp/pairs-1m "data.train_columns=[anchor,positive]"
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHUNK = 100_000  # rows drawn and written at a time: memory stays flat whatever N


def vocabulary(stsb: Path) -> np.ndarray:
    """The distinct alphabetic words of STSb's train sentences, lower-cased, sorted."""
    words: set[str] = set()
    with open(stsb / "train.csv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            for text in (row["sentence1"], row["sentence2"]):
                words.update(word.lower() for word in text.split() if word.isalpha())
    return np.array(sorted(words))


def write_pairs(out: Path, rows: int, stsb: Path, seed: int = 0) -> Path:
    """``out/train.csv`` with ``rows`` pairs (columns anchor, positive), and STSb's dev.csv / test.csv."""
    out.mkdir(parents=True, exist_ok=True)
    words, random = vocabulary(stsb), np.random.default_rng(seed)
    with open(out / "train.csv", "w", encoding="utf-8") as stream:
        stream.write("anchor,positive\n")
        for start in range(0, rows, CHUNK):
            count = min(CHUNK, rows - start)
            lengths = random.integers(5, 21, size=2 * count)
            picked = words[random.integers(0, len(words), size=int(lengths.sum()))]
            texts = [" ".join(part) for part in np.split(picked, np.cumsum(lengths)[:-1])]
            stream.write("".join(f"{texts[2 * i]},{texts[2 * i + 1]}\n" for i in range(count)))
    for split in ("dev", "test"):
        shutil.copyfile(stsb / f"{split}.csv", out / f"{split}.csv")
    return out / "train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write N synthetic (anchor, positive) pairs from STSb's words.")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", required=True, help="folder for train.csv (and STSb's dev.csv, test.csv)")
    parser.add_argument("--stsb", default=str(REPO.parent / "shared" / "data" / "stsb"), help="STSb folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = write_pairs(Path(args.out), args.rows, Path(args.stsb), args.seed)
    print(f"{path}: {args.rows} pairs, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

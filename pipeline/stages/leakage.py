"""The leakage audit: does an evaluation split hold rows or texts the model trains on?

Started by the load stage once the data is read and checked: ``fail`` and ``drop`` run there, before any
model loads (so ``fail`` costs seconds and creates no run); ``warn``, which changes nothing, runs in a
thread (:class:`Running`) while the job loads the model and trains. Each evaluation split is compared
with every train set:

- texts are normalised first: Unicode NFKC, lower case, punctuation and symbols to spaces, whitespace
  collapsed (``"A man, playing!"`` and ``"a man playing"`` are the same text);
- a row is the split's text columns, compared with the first as many text columns of the train rows
  (a pair with a pair, a pair with the (anchor, positive) of a triplet). A row of two texts with a
  numeric ``score`` (STS: the evaluator scores (a, b) as (b, a)) matches in either order; any other
  layout (anchor/positive for retrieval, triplets) only in its own order;
- ``exact``: the normalised rows are equal (a hash join: linear in rows);
- ``near``: the Jaccard similarity of the rows' shingles (the words and the word pairs of each text, each
  tagged with its column unless the row is symmetric) is at least ``data.leakage_threshold``. Exact
  set-similarity join: a train row can only reach the threshold if it holds one of the split row's
  ``|A| - ceil(t |A|) + 1`` rarest shingles (rarest in up to ``SAMPLE`` evenly spaced train rows; any
  order is exact, the rarest make the fewest candidates), so only the train rows that do are compared
  (linear in rows; each candidate's Jaccard is computed exactly). One word changed in one
  text of a pair of n words in all changes 3 of its about 2n - 2 shingles: at the default 0.6 that is
  a near duplicate from n = 7 words (STSb pairs average 20);
- ``texts``: split rows with at least one text that some train row holds (in any column).

The train rows are read once per train set for every split, ``BLOCK`` rows at a time, as 64-bit hashes
of their words and texts taken from their bytes (``pipeline.stages.wordhash``: a few numpy passes, no
Python per row); only the train rows a hash says can match (a text hashing like a split text, a prefix
shingle held) are normalised as texts and compared, so every count and match is exact.

What it returns (:class:`Audit`) the job logs: metrics ``leakage/<split>_rows_exact`` (rows with an
exact duplicate), ``leakage/<split>_rows_near`` (rows with a near duplicate and no exact one),
``leakage/<split>_texts``, ``leakage/train_rows_dropped``, and the matches as ``leakage/<split>.parquet``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import threading
from typing import Any

import numpy as np
import pandas as pd

from pipeline import PipelineError
from pipeline.stages.splits import LABEL_COLUMNS, Split
from pipeline.stages.wordhash import GOLDEN, MIX, normalise, words

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("score", "scores")  # a pair scored by similarity: (a, b) is (b, a)
MATCH_COLUMNS = ["split_row", "train_set", "train_row", "kind", "jaccard", "split_text", "train_text"]


class Mode(str, enum.Enum):
    """``data.leakage``: what a leaking row does."""

    WARN = "warn"  # one warning line; train on everything
    DROP = "drop"  # train without the train rows that duplicate an evaluation row (exact or near)
    FAIL = "fail"  # refuse the job before any model loads (exit 2, no run)
    OFF = "off"  # no audit


@dataclasses.dataclass(frozen=True)
class Settings:
    """``data.leakage`` and ``data.leakage_threshold`` (declared, with their defaults and allowed values, in
    ``stages.settings.Data``; read by ``stages.dataspec``)."""

    mode: Mode
    threshold: float  # shingle Jaccard from which a row is a near duplicate


@dataclasses.dataclass(frozen=True)
class Audit:
    """What the audit found: per evaluation split its counts and matches, and the train rows dropped."""

    counts: dict[str, dict[str, int]]  # split -> rows_exact, rows_near, texts
    matches: dict[str, pd.DataFrame]  # split -> MATCH_COLUMNS
    dropped: int | None  # None: not ``drop``

    @property
    def leaks(self) -> bool:
        return any(c["rows_exact"] or c["rows_near"] for c in self.counts.values())

    def metrics(self) -> dict[str, float]:
        out = {f"leakage/{split}_{name}": float(n) for split, c in self.counts.items() for name, n in c.items()}
        return out | ({"leakage/train_rows_dropped": float(self.dropped)} if self.dropped is not None else {})

    def summary(self) -> str:
        parts = [f"{s}: {c['rows_exact']} exact, {c['rows_near']} near rows" for s, c in self.counts.items()]
        return "; ".join(parts)


def audit(
    train: dict[str, Split], splits: dict[str, Split], settings: Settings
) -> tuple[Audit, dict[str, Split]] | None:
    """Compare each evaluation split with the train set(s); with ``drop``, the train sets without the
    leaking rows (each such set with a new fingerprint). ``fail`` raises when a row leaks. None when off."""
    splits = {name: split for name, split in splits.items() if len(split.dataset) and _has_texts(split.dataset)}
    if settings.mode is Mode.OFF or not train or not splits:  # an empty split (the trainer's eval_loss
        return None  # without rows to score, say) has nothing to leak
    evaluated = {name: Rows.of(split.dataset, scored_pairs=True) for name, split in splits.items()}
    vocab = Vocabulary.of(list(evaluated.values()))  # every split's words: the train rows are read once
    found: dict[str, list[pd.DataFrame]] = {name: [] for name in splits}
    for set_name, split in train.items():
        scanned = Scan.of(split.dataset, evaluated, vocab, settings.threshold)
        for name, other in evaluated.items():
            found[name].append(compare(scanned, name, other, settings.threshold).assign(train_set=set_name))
    matches = {name: pd.concat(frames, ignore_index=True)[MATCH_COLUMNS] for name, frames in found.items()}
    dropped = None
    if settings.mode is Mode.DROP:
        train, dropped = drop_rows(train, matches)
    result = Audit({name: count(frame) for name, frame in matches.items()}, matches, dropped)
    if settings.mode is Mode.FAIL and result.leaks:
        raise PipelineError(
            f"data.leakage=fail: evaluation rows duplicate training rows ({result.summary()}): remove them from the "
            "train file, or set data.leakage=drop to train without them (warn: train anyway)."
        )
    return result, train


class Running:
    """An audit that changes nothing (``warn``), run in a thread while the job opens its run, loads the
    model, scores the baseline and starts training: its numpy and Arrow passes release the GIL. :meth:`result` waits for it (and
    raises what it raised). The copies of the data a process cache hands out share it."""

    def __init__(self, train: dict[str, Split], splits: dict[str, Split], settings: Settings):
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(
            target=self._run, args=(train, splits, settings), name="leakage-audit", daemon=True
        )
        self._thread.start()

    def _run(self, *args) -> None:
        try:
            found = audit(*args)
            self._outcome["audit"] = found[0] if found else None
        except Exception as error:  # noqa: BLE001 - raised again in the thread that waits for the result
            self._outcome["error"] = error

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> Audit | None:
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["audit"]

    def __deepcopy__(self, memo) -> Running:
        return self


def found(leakage: Audit | Running | None) -> Audit | None:
    """What the audit found (``LoadedData.leakage``), waiting for it when it runs in a thread."""
    return leakage.result() if isinstance(leakage, Running) else leakage


@dataclasses.dataclass(frozen=True)
class Rows:
    """A data set's text columns, normalised (Arrow strings), and the words of each column."""

    texts: list  # pyarrow string arrays, one per text column
    words: list[tuple[np.ndarray, Any]]  # per column: (the row of each word, the words: a pyarrow array)
    symmetric: bool = False  # two texts scored by similarity (STS): (a, b) is (b, a)

    @classmethod
    def of(cls, ds, scored_pairs: bool = False) -> Rows:
        table = text_table(ds)
        symmetric = scored_pairs and table.num_columns == 2 and any(c in SCORE_COLUMNS for c in ds.column_names)
        return cls.from_texts([normalise(column) for column in table.columns], symmetric)

    def layout(self, train_width: int) -> tuple[int, bool]:
        """(texts compared, whether in either order) against train rows of ``train_width`` texts."""
        width = min(train_width, len(self.texts))
        return width, self.symmetric and width == 2

    @classmethod
    def from_texts(cls, texts: list, symmetric: bool = False) -> Rows:
        return cls(texts, [_words(column) for column in texts], symmetric)

    def __len__(self) -> int:
        return len(self.texts[0])

    def take(self, rows: np.ndarray, width: int) -> Rows:
        return Rows.from_texts([column.take(rows) for column in self.texts[:width]], self.symmetric)

    def joined(self, rows: np.ndarray) -> list[str]:
        """The texts of some rows (the matches: few), joined with `` || ``."""
        columns = [column.take(rows).to_pylist() for column in self.texts]
        return [" || ".join(texts) for texts in zip(*columns)] if len(rows) else []


def _has_texts(ds) -> bool:
    return any(c not in LABEL_COLUMNS for c in ds.column_names)


def text_table(ds):
    """A data set's text columns (scores and labels aside) as a pyarrow table."""
    return ds.select_columns([c for c in ds.column_names if c not in LABEL_COLUMNS]).with_format("arrow")[:]


def compare(scanned: Scan, name: str, split: Rows, threshold: float) -> pd.DataFrame:
    """Matches of the split's rows in the train rows: ``exact`` and ``near`` rows, ``text`` (a shared text).
    Only the train rows that can match (one of their texts hashes like a split text, or they hold a
    prefix shingle) are normalised and compared as texts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    width, symmetric = split.layout(len(scanned.columns))
    split_hashes = pa.array(np.concatenate([words(column, normalised=True).text_hashes for column in split.texts]))
    holding = [
        np.flatnonzero(pc.is_in(h, value_set=split_hashes).to_numpy(zero_copy_only=False)) for h in scanned.text_hashes
    ]
    candidates = scanned.prefixes[name].merge(scanned.holders[name], on="shingle")[["split_row", "train_row"]]
    candidates = candidates.drop_duplicates()
    rows = np.unique(np.concatenate([*holding, candidates.train_row.to_numpy()]).astype(np.int64))
    train = scanned.rows(rows)  # local row i is train row rows[i]
    exact = exact_rows(row_keys(train.texts[:width], symmetric), row_keys(split.texts[:width], symmetric))
    candidates["train_row"] = np.searchsorted(rows, candidates.train_row.to_numpy())
    candidates["jaccard"] = jaccard(split, train, candidates, width, symmetric)
    near = candidates[candidates.jaccard >= threshold - 1e-12]
    near = near[~near.split_row.isin(exact.split_row)]
    texts = shared_texts(train.texts, split.texts)
    matches = pd.concat([exact.assign(kind="exact", jaccard=1.0), near.assign(kind="near"), texts], ignore_index=True)
    matches["split_text"] = split.joined(matches.split_row.to_numpy())
    matches["train_text"] = train.joined(matches.train_row.to_numpy())
    matches["train_row"] = rows[matches.train_row.to_numpy().astype(np.int64)]
    return matches.sort_values(["split_row", "kind", "train_row"], ignore_index=True)


def row_keys(texts: list, symmetric: bool):
    """One string per row: its texts joined (a symmetric pair's in sorted order)."""
    import pyarrow.compute as pc

    if symmetric:
        a, b = texts
        in_order = pc.less_equal(a, b)
        texts = [pc.if_else(in_order, a, b), pc.if_else(in_order, b, a)]
    return pc.binary_join_element_wise(*texts, "\x1f")


def exact_rows(train_keys, split_keys) -> pd.DataFrame:
    """(split_row, train_row) of every pair of equal keys: a hash join, the train keys probed in the split's."""
    import pyarrow.compute as pc

    hit = np.flatnonzero(pc.is_in(train_keys, value_set=split_keys).to_numpy(zero_copy_only=False))
    left = pd.DataFrame({"key": split_keys.to_pandas(), "split_row": np.arange(len(split_keys))})
    right = pd.DataFrame({"key": train_keys.take(hit).to_pandas(), "train_row": hit})
    return left.merge(right, on="key")[["split_row", "train_row"]]


def shared_texts(train: list, split: list) -> pd.DataFrame:
    """Split rows with a text some train row holds: (split_row, the first such train row), kind ``text``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    every = pa.concat_arrays(train)  # column after column: position % rows is the row
    hit = np.flatnonzero(pc.is_in(every, value_set=pa.concat_arrays(split)).to_numpy(zero_copy_only=False))
    found = every.take(hit)
    first = np.full(len(split[0]), np.iinfo(np.int64).max)
    for column in split:
        where = pc.index_in(column, value_set=found).fill_null(-1).to_numpy()
        rows = np.full(len(where), np.iinfo(np.int64).max)
        rows[where >= 0] = hit[where[where >= 0]] % len(train[0])
        first = np.minimum(first, rows)
    rows = np.flatnonzero(first < np.iinfo(np.int64).max)
    return pd.DataFrame({"split_row": rows, "train_row": first[rows], "kind": "text", "jaccard": np.nan})


def count(matches: pd.DataFrame) -> dict[str, int]:
    rows = {kind: matches.loc[matches.kind == kind, "split_row"].nunique() for kind in ("exact", "near", "text")}
    return {"rows_exact": int(rows["exact"]), "rows_near": int(rows["near"]), "texts": int(rows["text"])}


def drop_rows(train: dict[str, Split], matches: dict[str, pd.DataFrame]) -> tuple[dict[str, Split], int]:
    """The train sets without their rows that are exact or near duplicates of an evaluation row."""
    kept, dropped = {}, 0
    for name, split in train.items():
        rows = leaking_rows(matches, name)
        if len(rows) == 0:
            kept[name] = split
            continue
        keep = np.setdiff1d(np.arange(len(split.dataset)), rows)
        fingerprint = hashlib.sha256(f"{split.fingerprint}:dropped:{rows.tolist()}".encode()).hexdigest()[:16]
        kept[name] = Split(split.dataset.select(keep), f"{split.source} (less {len(rows)} leaking rows)", fingerprint)
        dropped += len(rows)
    return kept, dropped


def leaking_rows(matches: dict[str, pd.DataFrame], train_set: str) -> np.ndarray:
    """The rows of one train set that are an exact or near duplicate of some evaluation row, sorted."""
    found = pd.concat(matches.values(), ignore_index=True)
    found = found[found.kind.isin(["exact", "near"]) & (found.train_set == train_set)]
    return np.unique(found.train_row.to_numpy().astype(np.int64))


def kept_candidates(candidates: list[str], train: Split, matches: dict[str, pd.DataFrame]) -> list[str]:
    """The mine stage's candidate texts (``mine.corpus=split``) without any text of a dropped train row:
    a dropped row's positive is not mined as another row's negative either (the kept rows' own positives
    are candidates all the same: ``mine_hard_negatives`` adds them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = leaking_rows(matches, "train")
    if len(rows) == 0:
        return candidates
    dropped = pa.concat_arrays([c.combine_chunks() for c in text_table(train.dataset.select(rows)).columns])
    held = pc.is_in(pa.array(candidates, type=dropped.type), value_set=dropped).to_numpy(zero_copy_only=False)
    return [text for text, drop in zip(candidates, held) if not drop]


# ----------------------------------------------------------------------------------------------
# Near duplicates: shingles, and an exact set-similarity join with a prefix filter
# ----------------------------------------------------------------------------------------------


BLOCK = 100_000  # train rows read at a time: the audit's memory stays flat whatever the train set's size
SAMPLE = 20_000  # train rows (evenly spaced; all of a smaller set) whose shingle counts order the prefixes


@dataclasses.dataclass(frozen=True)
class Scan:
    """A train set read once for every split: its text columns as read, each text's hash, and per split
    its rows' prefixes and the train rows holding a prefix shingle (the only ones that can be near)."""

    columns: list  # pyarrow arrays of the train texts, as read (normalised only for the rows a match needs)
    text_hashes: list[np.ndarray]  # per column: each text's hash (``wordhash``)
    prefixes: dict[str, pd.DataFrame]  # split -> (split_row, shingle)
    holders: dict[str, pd.DataFrame]  # split -> (train_row, shingle) of its layout's prefix shingles

    @classmethod
    def of(cls, ds, evaluated: dict[str, Rows], vocab: Vocabulary, threshold: float) -> Scan:
        table = text_table(ds)
        layouts = {name: rows.layout(table.num_columns) for name, rows in evaluated.items()}
        sample = table if len(table) <= SAMPLE else table.take(np.linspace(0, len(table) - 1, SAMPLE).astype(np.int64))
        sample_hashes, counted = read_block(sample, vocab, dict.fromkeys(layouts.values()))  # every shingle
        prefix = {}
        for name, rows in evaluated.items():
            width, symmetric = layouts[name]
            split_rows, split_shingles = vocab.shingles(vocab.words_of(rows), width, symmetric)
            frequency = np.bincount(counted[width, symmetric][1], minlength=vocab.size)
            prefix[name] = prefixes(split_rows, split_shingles, frequency, threshold)
        wanted = {layout: np.zeros(vocab.size, dtype=bool) for layout in layouts.values()}
        for name, layout in layouts.items():
            wanted[layout][prefix[name].shingle.to_numpy()] = True
        if sample is table:  # a set of at most SAMPLE rows (one block) is read once
            hashes, held = sample_hashes, {layout: holding(*counted[layout], wanted[layout]) for layout in wanted}
        else:
            hashes, held = read_train(table, vocab, wanted)
        holders = {name: held[layout] for name, layout in layouts.items()}
        return cls(table.columns, hashes, prefix, holders)

    def rows(self, rows: np.ndarray) -> Rows:
        """Some train rows' texts, normalised (the candidates of a match: few)."""
        import pyarrow as pa

        return Rows.from_texts([normalise(column.take(pa.array(rows))) for column in self.columns])


def holding(rows: np.ndarray, shingles: np.ndarray, wanted: np.ndarray) -> pd.DataFrame:
    """(train_row, shingle) of the wanted shingles among some."""
    keep = wanted[shingles]
    return pd.DataFrame({"train_row": rows[keep], "shingle": shingles[keep]}).drop_duplicates()


def read_train(table, vocab: Vocabulary, wanted: dict) -> tuple[list[np.ndarray], dict]:
    """Every text's hash, and per layout the (train_row, shingle) of every wanted shingle, block by block."""
    hashes: list[list[np.ndarray]] = [[] for _ in table.columns]
    held: dict = {layout: [] for layout in wanted}
    for start in range(0, len(table), BLOCK):
        text_hashes, found = read_block(table.slice(start, BLOCK), vocab, wanted)
        for column, h in zip(hashes, text_hashes):
            column.append(h)
        for layout, (rows, shingles) in found.items():
            held[layout].append(pd.DataFrame({"train_row": rows + start, "shingle": shingles}))
    frames = {layout: pd.concat(parts, ignore_index=True).drop_duplicates() for layout, parts in held.items()}
    return [np.concatenate(parts) for parts in hashes], frames


def read_block(table, vocab: Vocabulary, wanted: dict) -> tuple[list[np.ndarray], dict]:
    """Some train rows' text hashes, and per layout (width, symmetric) the (row, shingle id) of their
    shingles that the vocabulary holds: all of them where ``wanted[layout]`` is None, else only the
    wanted ones (found from the word hashes, no word looked up unless it may be wanted)."""
    read = [words(column) for column in table.columns]
    if all(flags is None for flags in wanted.values()):
        columns = [(w.text, vocab.word_ids(w.hashes)) for w in read]
        return [w.text_hashes for w in read], {layout: vocab.shingles(columns, *layout) for layout in wanted}
    found = {
        (width, symmetric): vocab.held(read, width, symmetric, flags) for (width, symmetric), flags in wanted.items()
    }
    return [w.text_hashes for w in read], found


def prefixes(rows: np.ndarray, shingles: np.ndarray, frequency: np.ndarray, threshold: float) -> pd.DataFrame:
    """Each split row's ``|A| - ceil(t |A|) + 1`` rarest distinct shingles (by train frequency): a row
    sharing none of them shares fewer than ``t |A|`` shingles, so its Jaccard is below ``t``."""
    frame = pd.DataFrame({"split_row": rows, "shingle": shingles}).drop_duplicates()
    frame["frequency"] = frequency[frame.shingle.to_numpy()]
    frame = frame.sort_values(["split_row", "frequency", "shingle"])
    size = frame.groupby("split_row").shingle.transform("size").to_numpy()
    keep = size - np.ceil(threshold * size - 1e-9).astype(int) + 1
    return frame[frame.groupby("split_row").cumcount().to_numpy() < keep][["split_row", "shingle"]]


def jaccard(split: Rows, train: Rows, pairs: pd.DataFrame, width: int, symmetric: bool) -> np.ndarray:
    """The exact shingle Jaccard of each candidate pair: the candidate train rows' shingles counted in a
    vocabulary of their own words too, the shared ones by a join."""
    if pairs.empty:
        return np.zeros(0)
    rows = np.unique(pairs.train_row.to_numpy())
    candidates, cut = train.take(rows, width), split.take(np.arange(len(split)), width)
    vocab = Vocabulary.of([cut, candidates])
    a = pd.DataFrame(dict(zip(("split_row", "shingle"), vocab.shingles(vocab.words_of(cut), width, symmetric))))
    local, shingles = vocab.shingles(vocab.words_of(candidates), width, symmetric)
    a, b = a.drop_duplicates(), pd.DataFrame({"train_row": rows[local], "shingle": shingles}).drop_duplicates()
    shared = pairs.merge(a, on="split_row").merge(b, on=["train_row", "shingle"])
    shared = shared.groupby(["split_row", "train_row"]).size().rename("shared")
    table = pairs.join(shared, on=["split_row", "train_row"]).fillna({"shared": 0})
    table = table.join(a.groupby("split_row").size().rename("a"), on="split_row")
    table = table.join(b.groupby("train_row").size().rename("b"), on="train_row")
    return (table.shared / (table.a + table.b - table.shared)).to_numpy()


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The words and word pairs of some rows as dense ids; a word or pair they lack is -1 (it is never shared)."""

    words: Any  # pyarrow string array of distinct words
    pairs: np.ndarray  # sorted distinct word id pairs, as ``first * len(words) + second``
    columns: int  # the most text columns of any of the rows: shingle ids are tagged with their column
    hashes: Any = None  # pyarrow uint64 array: each word's hash (``wordhash``), for the train words' ids

    @classmethod
    def of(cls, rows: list[Rows]) -> Vocabulary:
        import pyarrow as pa
        import pyarrow.compute as pc

        words = pc.unique(pa.concat_arrays([w for r in rows for _, w in r.words]))
        vocab = cls(words, np.zeros(0, dtype=np.int64), max(len(r.texts) for r in rows), pa.array(_hashes(words)))
        codes = [vocab.pair_codes(row, ids)[1] for r in rows for row, ids in vocab.words_of(r)]
        return dataclasses.replace(vocab, pairs=np.unique(np.concatenate(codes)))

    @property
    def size(self) -> int:
        return (len(self.words) + len(self.pairs)) * self.columns

    def words_of(self, rows: Rows) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per column of some rows: (the row of each word, its id; -1: a word not in the vocabulary)."""
        import pyarrow.compute as pc

        return [
            (row, pc.index_in(w, value_set=self.words).fill_null(-1).to_numpy().astype(np.int64))
            for row, w in rows.words
        ]

    def word_ids(self, hashes: np.ndarray) -> np.ndarray:
        """The id of the vocabulary word with each hash (``wordhash``), -1 for none: a train word with an
        id is that word (or, at 2^-64 odds, another; the candidates it makes are checked on their texts)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.index_in(pa.array(hashes), value_set=self.hashes).fill_null(-1).to_numpy().astype(np.int64)

    def pair_codes(self, row: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which neighbouring words of the same text both have ids, their pair codes)."""
        same = row[1:] == row[:-1]
        known = same & (ids[1:] >= 0) & (ids[:-1] >= 0)
        return known, ids[:-1][known] * len(self.words) + ids[1:][known]

    def shingles(
        self, columns: list[tuple[np.ndarray, np.ndarray]], width: int, symmetric: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, shingle id) of every word and word pair of the first ``width`` texts of each row (per
        column: the row of each word and its id) that the vocabulary holds (no other can be shared),
        column-tagged unless symmetric."""
        out_rows, out = [], []
        for column, (row, word) in enumerate(columns[:width]):
            at = np.flatnonzero((row[1:] == row[:-1]) & (word[1:] >= 0) & (word[:-1] >= 0))
            pair_rows, pairs = row[at], self.pair_index(word[at], word[at + 1])
            known = word >= 0
            shingles = np.concatenate([word[known], pairs[pairs >= 0] + len(self.words)])
            out.append(shingles * self.columns + (0 if symmetric else column))
            out_rows.append(np.concatenate([row[known], pair_rows[pairs >= 0]]))
        return np.concatenate(out_rows), np.concatenate(out)

    def pair_index(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The index in ``pairs`` of each pair of word ids (-1: not a pair of the vocabulary)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        codes = pa.array(first * len(self.words) + second)
        return pc.index_in(codes, value_set=pa.array(self.pairs)).fill_null(-1).to_numpy().astype(np.int64)

    def held(self, read: list, width: int, symmetric: bool, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, shingle id) of the ``wanted`` shingles (a flag per id) of the first ``width`` texts of
        some rows (``wordhash.Words`` per column). Words and neighbouring pairs are first sieved by a
        table of their hashes' top bits (no wanted one is missed; a few others pass), then looked up."""
        out_rows, out = [], []
        for column, w in enumerate(read[:width]):
            tag = 0 if symmetric else column
            base = np.flatnonzero(wanted)[np.flatnonzero(wanted) % self.columns == tag] // self.columns
            words, pairs = base[base < len(self.words)], self.pairs[base[base >= len(self.words)] - len(self.words)]
            hashes = self.hashes.to_numpy()
            at = np.flatnonzero(sieve(hashes[words])(w.hashes))
            word = self.word_ids(w.hashes[at])
            pair_keys = pair_key(hashes[pairs // len(self.words)], hashes[pairs % len(self.words)])
            same = np.flatnonzero(sieve(pair_keys)(pair_key(w.hashes[:-1], w.hashes[1:])))  # neighbours, sieved
            same = same[w.text[same] == w.text[same + 1]]  # then only those of one text
            first, second = self.word_ids(w.hashes[same]), self.word_ids(w.hashes[same + 1])
            pair = np.where((first >= 0) & (second >= 0), self.pair_index(first, second), -1)
            shingles = np.concatenate([word[word >= 0], pair[pair >= 0] + len(self.words)]) * self.columns + tag
            rows = np.concatenate([w.text[at][word >= 0], w.text[same][pair >= 0]])
            out.append(shingles[wanted[shingles]])
            out_rows.append(rows[wanted[shingles]])
        return np.concatenate(out_rows), np.concatenate(out)


SIEVE_BITS = 22  # a table of 4M flags: a few per cent of unwanted hashes pass at 100,000 wanted ones


def sieve(keys: np.ndarray):
    """A test of 64-bit hashes against ``keys``: True for every key, and for few others."""
    shift = np.uint64(64 - SIEVE_BITS)
    table = np.zeros(1 << SIEVE_BITS, dtype=bool)
    table[(keys * MIX) >> shift] = True
    return lambda hashes: table[(hashes * MIX) >> shift]


def pair_key(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One 64-bit hash for two word hashes in order."""
    return (first * GOLDEN) ^ second


def _hashes(words) -> np.ndarray:
    """The hash of each of some distinct normalised words (one word a text)."""
    from pipeline.stages.wordhash import words as read

    return read(words, normalised=True).hashes


def _words(texts) -> tuple[np.ndarray, Any]:
    """(the row of each word, the words) of a column of normalised texts, in order: split at the single
    spaces normalisation leaves (Arrow's plain split, twice as fast as its whitespace split)."""
    import pyarrow.compute as pc

    lists = pc.split_pattern(texts, " ")
    rows, words = pc.list_parent_indices(lists).to_numpy(), pc.list_flatten(lists)
    if pc.any(pc.equal(texts, "")).as_py():  # a text of punctuation only: no words
        kept = pc.not_equal(words, "")
        rows, words = rows[kept.to_numpy(zero_copy_only=False)], pc.filter(words, kept)
    return rows, words

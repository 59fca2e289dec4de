"""The load stage: read the data each stage needs and check every cell of it.

Data is read and checked before any model loads, so a bad file costs seconds. Every error names
the file, row and column and says how to fix it. Nothing here talks to MLflow: the job logs what
this stage returns (data fingerprints and sources, for dataset lineage).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
from pathlib import Path

from pipeline import PipelineError
from pipeline.stages import leakage, reuse
from pipeline.stages.dataspec import DataSource
from pipeline.stages.smoke import smoke_split
from pipeline.stages.spec import EvaluatorSpec, JobSpec
from pipeline.stages.splits import LABEL_COLUMNS, LoadedData, Split

log = logging.getLogger(__name__)

# Columns that hold numeric scores whatever the layout (``label`` may be text, e.g. NLI's "entailment").
SCORE_COLUMNS = ("score", "scores")
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


# Read and checked data by what it is read from: the jobs of a sequential sweep read it once.
DATA = reuse.ProcessCache("data", size=2)


def shared_data(spec: JobSpec) -> tuple[LoadedData, bool]:
    """``load_data``, read once per process for the same files and settings (``reuse``); whether it was
    read already. Each job gets its own copy of the splits (the rows themselves, Arrow tables, are shared:
    a trainer that sets a format on a dataset sets it on its copy). Data from the Hub is read every time."""
    key = data_key(spec)
    if key is None:
        return load_data(spec), False
    loaded, hit = DATA.get(key, lambda: load_data(spec))
    if hit:
        log.info("Data: from the process cache (read and checked by an earlier job of this process)")
    return copy.deepcopy(loaded), hit


_TRAINING = "shapes training after the data is read"
_MODEL = "a model's setting: no model takes part in reading the data"
# Config leaves (or nodes: every leaf under them) that never change what ``load_data`` returns, each with
# its reason; KEPT holds the leaves under such a node that do.
DATA_NOT_KEYED: dict[str, str] = {
    "seed": "the smoke sample and the checks draw nothing at random",
    "baseline": "scores the model, after the data is read",
    "baseline_reuse": "scores the model, after the data is read",
    "name": "a name (the MLflow experiment's)",
    "optimized_metric": "ranks runs",
    "tracking": "where and how the run is recorded",
    "guard": "watches training",
    "early_stopping": "watches training",
    "mine": "mines after the data is read (mine.corpus, which picks what is read, is kept)",
    "loss": "the training objective (the columns it needs are checked by validate, before the read)",
    "hardware": "where and how the job runs",
    "model": _MODEL,
    "guide": _MODEL,
    "miner": _MODEL,
    "training": _TRAINING + " (the batch size the train split must fill and eval_strategy, which adds the "
    "dev split, are kept)",
}
DATA_KEPT = ("mine.corpus", "training.per_device_train_batch_size", "training.eval_strategy")


def data_key(spec: JobSpec) -> str | None:
    """Everything ``load_data`` reads: every config leaf but :data:`DATA_NOT_KEYED`, and the content of each
    local file (sha256 of its bytes, read each job: a rewrite that keeps the size and modification time is
    seen). None when a split comes from the Hub."""
    sources = [spec.data, *spec.data.named_sets.values()] + (
        [spec.eval_data] if spec.eval_data is not spec.data else []
    )
    if not spec.smoke and any(source.from_hub for source in sources):
        return None
    folders = [source.local_dir for source in sources if source.local_dir]
    folders += [evaluator.corpus for evaluator in spec.evaluators if evaluator.corpus]
    folders += [source.corpus for source in sources if source.corpus]
    parts = {
        "config": reuse.keyed_leaves(spec.leaves, DATA_NOT_KEYED, DATA_KEPT),
        "files": [reuse.content_digest(Path(str(folder))) for folder in folders if Path(str(folder)).exists()],
    }
    return reuse.digest(parts)


def load_data(spec: JobSpec) -> LoadedData:
    """Read the train split(s) of ``spec.data`` and the evaluators' splits, validate them, and audit
    them for evaluation rows that duplicate train rows (``data.leakage``).

    ``data.train_sets`` (name -> data config) trains on several sets at once; each set is read
    and checked on its own, under its own key (``data.train_sets.NAME``).
    """
    train = eval_loss = None
    smoke = spec.smoke
    if spec.stages.train:
        sets = spec.data.train_sets
        batch = int(spec.training.per_device_train_batch_size)
        read = {name: _read_train(source, smoke=smoke) for name, source in sets.items()}
        for split in read.values():
            if len(split.dataset) < batch:
                raise PipelineError(
                    f"{split.source}: the train split has {len(split.dataset)} rows, fewer than one batch "
                    f"(training.per_device_train_batch_size={batch}): add rows or lower the batch size."
                )
        train = read if spec.data.several else read["train"]
        if spec.evaluates_during_training and not spec.evaluators:
            # No evaluator: the trainer scores the loss on the dev split (logged as eval_loss).
            dev = {name: _read_train(source, smoke=smoke, split="dev") for name, source in sets.items()}
            eval_loss = dev if spec.data.several else dev["train"]

    splits = {
        name: _read_eval(spec.eval_data, name, [spec.evaluator(n) for n in names], smoke=smoke)
        for name, names in spec.splits_needed.items()
        if smoke or _present(spec.eval_data, name)
    }
    # A larger retrieval corpus: evaluators.NAME.corpus, else the evaluation data's own data.corpus (ir only).
    corpora = {e.name: read_corpus(e.corpus, f"corpus of evaluator {e.name}") for e in spec.evaluators if e.corpus}
    mining = spec.stages.mine and spec.mine.corpus == "split" and not smoke
    candidates = candidate_texts(spec.data) if mining else None
    loaded = LoadedData(train=train, eval_splits=splits, eval_loss=eval_loss, corpora=corpora, candidates=candidates)
    return audited(loaded, spec.data.leakage)


def audited(loaded: LoadedData, settings: leakage.Settings) -> LoadedData:
    """The data with its leakage audit (``pipeline.stages.leakage``): with ``data.leakage=drop``, the train
    set(s) without the rows that duplicate an evaluation row, and the mine stage's candidates without their
    texts; ``fail`` refuses the job here. ``warn`` changes nothing: its audit runs in a thread (``leakage.Running``)
    that the job logs once it is done (training does not wait for it)."""
    if settings.mode is leakage.Mode.WARN and loaded.train_splits:
        return dataclasses.replace(loaded, leakage=leakage.Running(loaded.train_splits, loaded.eval_splits, settings))
    found = leakage.audit(loaded.train_splits, loaded.eval_splits, settings)
    if found is None:
        return loaded
    result, train = found
    kept = train if isinstance(loaded.train, dict) else train["train"]
    candidates = loaded.candidates
    if result.dropped and candidates is not None:
        candidates = leakage.kept_candidates(candidates, loaded.train_splits["train"], result.matches)
    return dataclasses.replace(loaded, train=kept, leakage=result, candidates=candidates)


def candidate_texts(data: DataSource) -> list[str] | None:
    """The mine stage's candidates: every distinct text of the train file's positive column (the second of
    ``train_columns``, after renames, before ``train_transform``); None when the file has no such column."""
    read = _read_split(data, "train")
    column = data.train_columns[1]
    if column not in read.dataset.column_names:
        return None
    return list(dict.fromkeys(str(text) for text in read.dataset[column] if text is not None and str(text).strip()))


def _present(data: DataSource, split: str) -> bool:
    """False for a split listed in ``optional_splits`` that ``local_dir`` does not hold (it is skipped)."""
    if split not in data.optional_splits or not data.local_dir:
        return True
    folder = Path(data.local_dir).expanduser()
    found = any((folder / f"{name}{ext}").is_file() for name in {data.stem(split), split} for ext in FORMATS)
    if not found:
        log.info("%s.local_dir=%s has no %s split: not scored (%s.optional_splits)", data.key, folder, split, data.key)
    return found


def _read_train(data: DataSource, smoke: bool, split: str = "train") -> Split:
    columns = list(data.layout)
    key = data.key
    if smoke:
        return smoke_split(columns, split if key == "data" else f"{split}.{key.rsplit('.', 1)[-1]}")
    read = _read_split(data, split)
    ds = read.dataset
    transform = data.train_transform
    if transform:
        from hydra.utils import instantiate

        # the transform reads scores as numbers: a text score is the user's row, not a TypeError
        scores = [c for c in ds.column_names if c in SCORE_COLUMNS]
        _check_cells(ds, list(ds.column_names), read.source, numeric=scores)
        ds = instantiate(transform)(ds)
        where = f"{read.source} (after {key}.train_transform)"
    else:
        where = read.source
    _require_columns(ds, columns, where, key=f"{key}.train_columns")
    ds = ds.select_columns(columns)
    if split == "train" and data.max_train_rows:
        ds = ds.select(range(min(data.max_train_rows, len(ds))))
    _check_cells(ds, columns, where, numeric=[c for c in columns if c in LABEL_COLUMNS])
    return Split(ds, read.source, read.fingerprint)


def _read_eval(data: DataSource, name: str, specs: list[EvaluatorSpec], smoke: bool) -> Split:
    """One evaluation split with the columns of every evaluator that scores it, each checked."""
    columns = list(dict.fromkeys(str(c) for spec in specs for c in spec.columns))
    if smoke:
        return smoke_split(columns, name)
    split = _read_split(data, name)
    ds = split.dataset
    for spec in specs:
        _require_columns(ds, list(spec.columns), split.source, key=f"{spec.key}.columns")
    labels = [str(s.label) for s in specs if s.label and s.label in ds.column_names and s.label not in columns]
    ds = ds.select_columns(columns + labels)
    # The evaluators take (text, text, score) or (text, text, text): a third-column score is numeric.
    for spec in specs:
        spec_columns = list(spec.columns) + [c for c in labels if c == spec.label]
        numeric = [c for c in spec_columns if c in LABEL_COLUMNS]
        _check_cells(
            ds,
            spec_columns,
            split.source,
            numeric=numeric,
            score_range=spec.score_range,
            range_key=f"{spec.key}.score_range",
            constant_scores=not spec.label,  # judged relevance (ir) may be all 1
        )
    return Split(ds, split.source, split.fingerprint)


def read_corpus(path: str, key: str) -> Split:
    """An extra retrieval corpus: a ``text`` column and an optional ``id`` column of unique ids."""
    file = Path(path).expanduser()
    if not file.is_file() or file.suffix not in FORMATS:
        raise PipelineError(
            f"{key}={path!r} is not a .csv/.jsonl/.parquet file: point it at a file with a text column."
        )
    ds, source, fingerprint = _read_local(file.parent, file.stem, key, "corpus")
    _require_columns(ds, ["text"], source, key=key)
    if "id" not in ds.column_names:
        ds = ds.add_column("id", [str(i) for i in range(len(ds))])
    _check_cells(ds, ["id", "text"], source, numeric=())
    ids = ds.to_pandas()["id"].astype(str)
    repeated = ids[ids.duplicated()]
    if len(repeated):
        row = int(repeated.index[0])
        raise PipelineError(
            f"{source}: row {row + 1}, id {ids.iloc[row]!r} appears {int((ids == ids.iloc[row]).sum())} times "
            f"({len(repeated)} repeated id(s)): corpus ids must be unique; drop or renumber the repeats."
        )
    return Split(ds.select_columns(["id", "text"]), source, fingerprint)


def _read_split(data: DataSource, split: str) -> Split:
    """Read one split from ``data.local_dir`` or the Hub and apply the column renames."""
    key, stem = data.key, data.stem(split)
    if data.local_dir:
        ds, source, fingerprint = _read_local(Path(data.local_dir), stem, key, split)
    elif data.path:
        ds, source, fingerprint = _read_hub(data, stem)
    else:
        raise PipelineError(f"{key}: neither {key}.local_dir nor {key}.path is set: set one of them.")
    renames = {src: ours for ours, src in data.renames.items() if src in ds.column_names and src != ours}
    if renames:
        clashes = [ours for ours in renames.values() if ours in ds.column_names]
        if clashes:
            ds = ds.remove_columns(clashes)
        ds = ds.rename_columns(renames)
    if len(ds) == 0:
        raise PipelineError(
            f"{source}: the {split} split has no rows (header only?): add rows or point {key}.local_dir elsewhere."
        )
    return Split(ds, source, fingerprint)


def _read_local(folder: Path, stem: str, key: str, split: str):
    folder = folder.expanduser()
    if not folder.is_dir():
        raise PipelineError(
            f"{key}.local_dir={str(folder)!r} is not a folder: point it at a folder holding "
            f"{{train,dev,test}}.{{csv,jsonl,parquet}} files."
        )
    # The mapped name (a Hub split name such as "validation") first, then our own split name: a
    # local folder of {train,dev,test} files serves a data config written for the Hub as it is.
    stems = list(dict.fromkeys([stem, split]))
    candidates = [folder / f"{name}{ext}" for name in stems for ext in FORMATS]
    found = [p for p in candidates if p.is_file()]
    if not found:
        present = sorted(p.name for p in folder.iterdir() if p.suffix in FORMATS)
        raise PipelineError(
            f"{key}.local_dir={str(folder)!r} has no {split} split: expected {stem}.csv, {stem}.jsonl or "
            f"{stem}.parquet, found {present or 'no data files'}. Add the file or map the split with "
            f"{key}.splits.{split}=STEM."
        )
    path = found[0]
    fmt = FORMATS[path.suffix]
    from datasets import load_dataset

    options = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    fingerprint = file_digest(path)
    # datasets keys its Arrow cache of a local file on the path and modification time: a rewrite that keeps
    # both (cp -p, rsync -a, tar, unzip) would be served from the old copy. The split named after the
    # content digest is in that key, so new content is read again and the same content reused.
    content_split = f"content_{fingerprint}"
    try:
        ds = load_dataset(fmt, data_files={content_split: str(path)}, split=content_split, **options)
    except Exception as error:  # datasets/pyarrow raise many types for unreadable files
        if _has_no_rows(path):
            raise PipelineError(
                f"{path}: the {split} split has no rows (header only?): add rows or point {key}.local_dir elsewhere."
            ) from None
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise PipelineError(
            f"{path}: cannot be read as {path.suffix[1:]} ({reason}): check the file's format and encoding "
            "(UTF-8 with a header row for csv, one JSON object per line for jsonl)."
        ) from error
    return ds, str(path), fingerprint


def file_digest(path: Path) -> str:
    """The file's content fingerprint (sha256, 16 hex digits), read in blocks: a 2 GB file is never held whole."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()[:16]


def _has_no_rows(path: Path) -> bool:
    """A text file with at most a header line (csv/tsv) or no line (jsonl/json)."""
    if path.suffix == ".parquet":
        return False
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return len(lines) <= (1 if path.suffix in (".csv", ".tsv") else 0)


def _read_hub(data: DataSource, split: str):
    from pipeline.runtime.offline import hub_reachable

    online = hub_reachable()
    from datasets import load_dataset

    key = data.key
    try:
        ds = load_dataset(data.path, data.subset, split=split)
    except Exception as error:
        if not online:
            raise PipelineError(
                f"{key}.path={data.path!r}: the Hugging Face Hub cannot be reached and the data set is not "
                f"in the local cache. Point {key}.local_dir at a folder with train/dev/test "
                ".csv/.jsonl/.parquet files (e.g. ../shared/data/stsb)."
            ) from error
        raise PipelineError(f"{key}.path={data.path!r} split {split!r}: cannot be loaded ({error}).") from error
    return (
        ds,
        f"hf://datasets/{data.path}" + (f"/{data.subset}" if data.subset else "") + f"[{split}]",
        ds._fingerprint,
    )


def _require_columns(ds, columns: list[str], where: str, key: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise PipelineError(
            f"{where}: missing column(s) {missing} needed by {key}={columns}; the file has "
            f"{ds.column_names}. Rename them with data.columns.NAME=SOURCE_COLUMN or pick another loss/evaluator."
        )


CHECK_ROWS = 100_000  # rows checked at a time: memory stays flat whatever the file's size


def _first_empty(ds, column: str) -> tuple[int | None, int]:
    """(the first empty or whitespace-only cell's row, the number of such cells) of one column, read in
    blocks of ``CHECK_ROWS`` rows; (None, 0) when every cell holds something."""
    first, count = None, 0
    cells = ds.select_columns([column]).with_format("pandas")
    for start in range(0, len(ds), CHECK_ROWS):
        values = cells[start : start + CHECK_ROWS][column]
        empty = values.isna() | _blank(values)
        if empty.any():
            first = first if first is not None else start + int(empty.to_numpy().nonzero()[0][0])
            count += int(empty.sum())
    return first, count


def _blank(values):
    """Whitespace-only text cells: vectorised on a string column (Arrow-backed: linear, no Python loop)."""
    import pandas as pd

    if isinstance(values.dtype, pd.StringDtype):
        return values.str.strip().eq("").fillna(False).astype(bool)
    return values.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)


def _check_cells(
    ds, columns: list[str], where: str, numeric, score_range=None, constant_scores=False, range_key="score_range"
) -> None:
    """Empty or whitespace-only cells, non-numeric or out-of-range scores: the first bad row, by number;
    with ``constant_scores``, scores that are all equal (an evaluator's correlation would be NaN)."""
    line_offset = 2 if where.endswith((".csv", ".tsv")) else 1  # header row, 1-based lines
    for column in columns:
        row, count = _first_empty(ds, column)
        if row is not None:
            raise PipelineError(
                f"{where}: row {row + 1} (line {row + line_offset}), column {column!r} is empty "
                f"({count} empty cell(s) in that column): fill or remove those rows."
            )
        if column in numeric:
            import pandas as pd

            values = ds.select_columns([column]).to_pandas()[column]
            as_number = pd.to_numeric(values, errors="coerce")
            bad = as_number.isna() | ~as_number.map(lambda v: math.isfinite(v) if v == v else False)
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise PipelineError(
                    f"{where}: row {row + 1} (line {row + line_offset}), column {column!r} holds "
                    f"{values.iloc[row]!r}, not a finite number: scores must be numeric."
                )
            if constant_scores and len(as_number) > 1 and as_number.nunique() == 1:
                raise PipelineError(
                    f"{where}: column {column!r} holds {as_number.iloc[0]} in every row: a correlation with "
                    "constant scores is undefined (NaN), so this split cannot score a model; use a split with "
                    "varied scores, or another evaluator."
                )
            if score_range is not None:
                low, high = float(score_range[0]), float(score_range[1])
                outside = (as_number < low) | (as_number > high)
                if outside.any():
                    row = int(outside.to_numpy().nonzero()[0][0])
                    raise PipelineError(
                        f"{where}: row {row + 1} (line {row + line_offset}), column {column!r} is "
                        f"{as_number.iloc[row]}, outside {range_key}=[{low}, {high}]: fix the "
                        "score or widen the range."
                    )

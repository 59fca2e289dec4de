"""The load stage: read and validate the data, then load the model(s), loss and evaluators.

Data is read and checked before any model loads, so a bad file costs seconds. Every error names
the file, row and column and says how to fix it. Nothing here talks to MLflow: the entry point
logs what this stage returns (data fingerprints and sources for dataset lineage).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import REPO_ROOT, PipelineError

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Column names sentence-transformers treats as the loss's label rather than a text input.
LABEL_COLUMNS = ("score", "scores", "label", "labels")
EXAMPLE_DIR = REPO_ROOT / "pipeline" / "data" / "example"
SMOKE_ROWS = 16


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


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def load_data(cfg: DictConfig) -> LoadedData:
    """Read the train split(s) of ``cfg.data`` and the evaluator's splits, and validate them.

    Needs the whole config only to know which splits the stages use and the batch size.
    ``data.train_sets`` (name -> data config) trains on several sets at once; each set is read
    and checked on its own, under its own key (``data.train_sets.NAME``).
    """
    needs_train = "train" in cfg.stages
    evaluates_during_training = needs_train and str(cfg.training.get("eval_strategy", "no")) != "no"
    evaluator = cfg.evaluator
    eval_splits_needed: list[str] = []
    if evaluator.get("_target_"):
        if "evaluate" in cfg.stages:
            eval_splits_needed += list(evaluator.splits)
        if evaluates_during_training and "dev" not in eval_splits_needed:
            eval_splits_needed.append("dev")

    train = eval_loss = None
    if needs_train:
        sets = train_sets(cfg.data)
        batch = int(cfg.training.per_device_train_batch_size)
        read = {name: _read_train(data, key, smoke=cfg.smoke) for name, (data, key) in sets.items()}
        for split in read.values():
            if len(split.dataset) < batch:
                raise PipelineError(
                    f"{split.source}: the train split has {len(split.dataset)} rows, fewer than one batch "
                    f"(training.per_device_train_batch_size={batch}): add rows or lower the batch size."
                )
        train = read if cfg.data.get("train_sets") else read["train"]
        if evaluates_during_training and not evaluator.get("_target_"):
            # No evaluator: the trainer scores the loss on the dev split (logged as eval_loss).
            dev = {name: _read_train(data, key, smoke=cfg.smoke, split="dev") for name, (data, key) in sets.items()}
            eval_loss = dev if cfg.data.get("train_sets") else dev["train"]

    eval_cfg = cfg.eval_data if cfg.get("eval_data") else cfg.data
    eval_key = "eval_data" if cfg.get("eval_data") else "data"
    splits = {}
    for name in eval_splits_needed:
        splits[name] = _read_eval(eval_cfg, eval_key, name, evaluator, smoke=cfg.smoke)
    return LoadedData(train=train, eval_splits=splits, eval_loss=eval_loss)


def train_sets(data: DictConfig) -> dict[str, tuple[DictConfig, str]]:
    """The train set(s) of a data config: name -> (its data config, its config key).

    One set: ``{"train": (data, "data")}``. Several (``data.train_sets``): one entry per name.
    """
    named = data.get("train_sets") or {}
    if not named:
        return {"train": (data, "data")}
    return {str(name): (named[name], f"data.train_sets.{name}") for name in named}


def _read_train(data: DictConfig, key: str, smoke: bool, split: str = "train") -> Split:
    columns = list(data.train_columns)
    if smoke:
        return _smoke_split(columns, split if key == "data" else f"{split}.{key.rsplit('.', 1)[-1]}")
    read = _read_split(data, key, split)
    ds = read.dataset
    transform = data.get("train_transform")
    if transform:
        from hydra.utils import instantiate

        _check_cells(ds, list(ds.column_names), read.source, numeric=())
        ds = instantiate(transform)(ds)
        where = f"{read.source} (after {key}.train_transform)"
    else:
        where = read.source
    _require_columns(ds, columns, where, key=f"{key}.train_columns")
    ds = ds.select_columns(columns)
    if split == "train" and data.get("max_train_rows"):
        ds = ds.select(range(min(int(data.max_train_rows), len(ds))))
    _check_cells(ds, columns, where, numeric=[c for c in columns if c in LABEL_COLUMNS])
    return Split(ds, read.source, read.fingerprint)


def _read_eval(data: DictConfig, key: str, name: str, evaluator: DictConfig, smoke: bool) -> Split:
    columns = list(evaluator.columns)
    if smoke:
        return _smoke_split(columns, name)
    split = _read_split(data, key, name)
    ds = split.dataset
    _require_columns(ds, columns, split.source, key=f"evaluator.columns ({evaluator.name})")
    ds = ds.select_columns(columns)
    # The evaluators take (text, text, score) or (text, text, text): a third-column score is numeric.
    numeric = [c for c in columns if c in LABEL_COLUMNS]
    _check_cells(ds, columns, split.source, numeric=numeric, score_range=evaluator.get("score_range"))
    return Split(ds, split.source, split.fingerprint)


def _read_split(data: DictConfig, key: str, split: str) -> Split:
    """Read one split from ``data.local_dir`` or the Hub and apply the column renames."""
    stem = data.splits.get(split, split) if data.get("splits") else split
    if data.get("local_dir"):
        ds, source, fingerprint = _read_local(Path(data.local_dir), stem, key, split)
    elif data.get("path"):
        ds, source, fingerprint = _read_hub(data, key, stem)
    else:
        raise PipelineError(f"{key}: neither {key}.local_dir nor {key}.path is set: set one of them.")
    renames = {src: ours for ours, src in (data.get("columns") or {}).items() if src in ds.column_names and src != ours}
    if renames:
        clashes = [ours for ours in renames.values() if ours in ds.column_names]
        if clashes:
            ds = ds.remove_columns(clashes)
        ds = ds.rename_columns(renames)
    if len(ds) == 0:
        raise PipelineError(f"{source}: the {split} split has no rows (header only?): add rows or point {key}.local_dir elsewhere.")
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
    try:
        ds = load_dataset(fmt, data_files=str(path), split="train", **options)
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
    return ds, str(path), hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _has_no_rows(path: Path) -> bool:
    """A text file with at most a header line (csv/tsv) or no line (jsonl/json)."""
    if path.suffix == ".parquet":
        return False
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return len(lines) <= (1 if path.suffix in (".csv", ".tsv") else 0)


def _read_hub(data: DictConfig, key: str, split: str):
    from pipeline.offline import hub_reachable

    online = hub_reachable()
    from datasets import load_dataset

    try:
        ds = load_dataset(data.path, data.get("subset"), split=split)
    except Exception as error:
        if not online:
            raise PipelineError(
                f"{key}.path={data.path!r}: the Hugging Face Hub cannot be reached and the data set is not "
                f"in the local cache. Point {key}.local_dir at a folder with train/dev/test "
                ".csv/.jsonl/.parquet files (e.g. ../shared/data/stsb)."
            ) from error
        raise PipelineError(f"{key}.path={data.path!r} split {split!r}: cannot be loaded ({error}).") from error
    return ds, f"hf://datasets/{data.path}" + (f"/{data.subset}" if data.get("subset") else "") + f"[{split}]", ds._fingerprint


def _require_columns(ds, columns: list[str], where: str, key: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise PipelineError(
            f"{where}: missing column(s) {missing} needed by {key}={columns}; the file has "
            f"{ds.column_names}. Rename them with data.columns.NAME=SOURCE_COLUMN or pick another loss/evaluator."
        )


def _check_cells(ds, columns: list[str], where: str, numeric, score_range=None) -> None:
    """Empty or missing cells, non-numeric or out-of-range scores: the first bad row, by number."""
    frame = ds.select_columns(columns).to_pandas()
    line_offset = 2 if where.endswith((".csv", ".tsv")) else 1  # header row, 1-based lines
    for column in columns:
        values = frame[column]
        empty = values.isna()
        if values.dtype == object:
            empty |= values.map(lambda v: isinstance(v, str) and not v.strip())
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0])
            raise PipelineError(
                f"{where}: row {row + 1} (line {row + line_offset}), column {column!r} is empty "
                f"({int(empty.sum())} empty cell(s) in that column): fill or remove those rows."
            )
        if column in numeric:
            import pandas as pd

            as_number = pd.to_numeric(values, errors="coerce")
            bad = as_number.isna() | ~as_number.map(lambda v: math.isfinite(v) if v == v else False)
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise PipelineError(
                    f"{where}: row {row + 1} (line {row + line_offset}), column {column!r} holds "
                    f"{values.iloc[row]!r}, not a finite number: scores must be numeric."
                )
            if score_range is not None:
                low, high = float(score_range[0]), float(score_range[1])
                outside = (as_number < low) | (as_number > high)
                if outside.any():
                    row = int(outside.to_numpy().nonzero()[0][0])
                    raise PipelineError(
                        f"{where}: row {row + 1} (line {row + line_offset}), column {column!r} is "
                        f"{as_number.iloc[row]}, outside evaluator.score_range=[{low}, {high}]: fix the "
                        "score or widen the range."
                    )


def _smoke_split(columns: list[str], name: str) -> Split:
    """A few rows of the bundled example in the given column layout (for debug=smoke)."""
    import csv

    from datasets import Dataset

    with open(EXAMPLE_DIR / "train.csv", newline="") as f:
        pairs = list(csv.DictReader(f))[: SMOKE_ROWS + 4]
    with open(EXAMPLE_DIR / ("test.csv" if name == "test" else "dev.csv"), newline="") as f:
        scored = list(csv.DictReader(f))[:SMOKE_ROWS]
    text_columns = [c for c in columns if c not in LABEL_COLUMNS]
    rows: dict[str, list] = {c: [] for c in columns}
    for i in range(SMOKE_ROWS):
        if len(text_columns) < len(columns):  # scored layout: (text, text, score)
            texts = [scored[i]["sentence1"], scored[i]["sentence2"]]
            for column in columns:
                rows[column].append(float(scored[i]["score"]) if column in LABEL_COLUMNS else texts.pop(0) if texts else pairs[i]["anchor"])
        else:  # anchor, positive, then negatives taken from other rows' positives
            texts = [pairs[i]["anchor"], pairs[i]["positive"]] + [pairs[i + k]["positive"] for k in range(1, 4)]
            for column, text in zip(columns, texts):
                rows[column].append(text)
    blob = json.dumps(rows, sort_keys=True).encode()
    return Split(Dataset.from_dict(rows), f"smoke sample ({name}: {', '.join(columns)})", hashlib.sha256(blob).hexdigest()[:16])


# ----------------------------------------------------------------------------------------------
# Models, loss, evaluators
# ----------------------------------------------------------------------------------------------


def load_model(model_cfg: DictConfig, seed: int, key: str = "model"):
    """A SentenceTransformer from a Hub id / folder, or built from ``architecture`` (random weights)."""
    from sentence_transformers import SentenceTransformer

    from pipeline.offline import resolve_model

    if model_cfg.get("architecture"):
        model = _build_from_architecture(model_cfg, seed, key)
    else:
        path = resolve_model(str(model_cfg.name_or_path), key=f"{key}.name_or_path")
        model = SentenceTransformer(path, device="cpu", trust_remote_code=bool(model_cfg.get("trust_remote_code")))
    if model_cfg.get("max_seq_length"):
        model.max_seq_length = int(model_cfg.max_seq_length)
    return model


def _build_from_architecture(model_cfg: DictConfig, seed: int, key: str):
    import torch
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from pipeline.offline import resolve_model

    if not model_cfg.get("tokenizer"):
        raise PipelineError(f"{key}.architecture is set but {key}.tokenizer is not: name a tokenizer (Hub id or folder).")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(str(model_cfg.tokenizer), key=f"{key}.tokenizer"))
    arch = OmegaConf.to_container(model_cfg.architecture, resolve=True)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **arch)
    torch.manual_seed(seed)
    auto_model = AutoModel.from_config(config)
    with tempfile.TemporaryDirectory(prefix="pipeline-model-") as folder:
        # Not save_pretrained: it writes on rank 0 only once a process group exists (several ranks).
        config.save_pretrained(folder)
        save_file(auto_model.state_dict(), f"{folder}/model.safetensors")
        tokenizer.save_pretrained(folder)
        transformer = Transformer(folder, max_seq_length=model_cfg.get("max_seq_length"))
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=model_cfg.get("pooling", "mean"))]
    if model_cfg.get("normalize"):
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu")


def build_loss(loss_cfg: DictConfig, model, guide=None):
    """Instantiate the loss class named by ``loss._target_`` around the model (and guide)."""
    from hydra.utils import instantiate

    factory = instantiate(loss_cfg)
    takes_guide = "guide" in inspect.signature(factory.func).parameters
    if takes_guide:
        if guide is None:
            raise PipelineError(f"loss {factory.func.__name__} needs a guide model: set guide=minilm (or another model).")
        return factory(model=model, guide=guide)
    return factory(model=model)


def loss_takes_guide(loss_cfg: DictConfig) -> bool:
    from hydra.utils import get_class

    return "guide" in inspect.signature(get_class(loss_cfg._target_)).parameters


EVALUATOR_KEYS = ("columns", "primary_metric", "splits", "score_range")


def build_evaluator(evaluator_cfg: DictConfig, split: str, data: Split, batch_size: int):
    """The evaluator class named by ``evaluator._target_`` over one split, named ``{name}-{split}``."""
    from hydra.utils import instantiate

    options = {k: v for k, v in evaluator_cfg.items() if k not in EVALUATOR_KEYS}
    options["name"] = f"{evaluator_cfg.name}-{split}"
    factory = instantiate(OmegaConf.create(options))
    columns = [data.dataset[c] for c in evaluator_cfg.columns]
    return factory(*columns, batch_size=batch_size)

"""The mine stage: (anchor, positive) pairs -> (anchor, positive, negative) rows with hard negatives.

``sentence_transformers.util.mine_hard_negatives`` does the mining, with the options under ``mine.*``
(names as there) and the miner model (``miner=...``, or the model being trained). The mined set is
cached on disk under the fingerprint of (train data, candidate corpus, miner, options): a rerun with the
same inputs reuses it. Writes nothing to MLflow: the job logs the returned set as a dataset input.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.stages.splits import Split

log = logging.getLogger(__name__)

# mine.* keys handed to mine_hard_negatives under the same names.
MINER_OPTIONS = (
    "range_min",
    "range_max",
    "relative_margin",
    "absolute_margin",
    "num_negatives",
    "sampling_strategy",
    "use_faiss",
    "batch_size",
)


@dataclass(frozen=True)
class Mined:
    """The mined train set, its cache folder and whether it came from the cache."""

    split: Split
    folder: Path
    cached: bool


def check_options(mine_cfg: DictConfig, train_columns: list[str], data_name: str) -> None:
    """Config checks (no data, no model): the layout has an anchor and a positive; the range fits."""
    if len(train_columns) != 2:
        raise PipelineError(
            f"the mine stage needs (anchor, positive) pairs; data {data_name!r} trains on {train_columns}: "
            "drop mine from stages, or pick a data config with two text columns."
        )
    low, high, wanted = int(mine_cfg.range_min), mine_cfg.range_max, int(mine_cfg.num_negatives)
    if wanted < 1 or (high is not None and int(high) - low < wanted):
        raise PipelineError(
            f"mine.range_max={high} with mine.range_min={low} leaves {None if high is None else int(high) - low} "
            f"candidates, fewer than mine.num_negatives={wanted}: raise range_max or lower num_negatives (>= 1)."
        )
    if mine_cfg.corpus not in ("split", "positives"):
        raise PipelineError(f"mine.corpus={mine_cfg.corpus!r}: use split (every text of the train file) or positives.")


def fingerprint(train: Split, corpus: list[str] | None, miner_cfg: DictConfig, seed: int, mine_cfg: DictConfig) -> str:
    """What the mined set depends on: the pairs, the candidates, the miner (and the seed of a built one), the options."""
    digest = hashlib.sha256(train.fingerprint.encode())
    digest.update(json.dumps(corpus or []).encode())
    miner = OmegaConf.to_container(miner_cfg, resolve=True)
    digest.update(json.dumps([miner, seed if miner.get("architecture") else None], sort_keys=True).encode())
    options = {key: mine_cfg.get(key) for key in MINER_OPTIONS}
    digest.update(json.dumps(options, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached(mine_cfg: DictConfig, key: str) -> bool:
    """Whether the set mined under ``key`` is in ``mine.cache_dir``."""
    return (Path(mine_cfg.cache_dir).expanduser() / key / "dataset_info.json").is_file()


def mine(train: Split, model, mine_cfg: DictConfig, corpus: list[str] | None, key: str) -> Mined:
    """The mined set for ``train`` (from ``mine.cache_dir/key`` when it is there)."""
    from datasets import load_from_disk
    from sentence_transformers.util import mine_hard_negatives

    folder = Path(mine_cfg.cache_dir).expanduser() / key
    if cached(mine_cfg, key):
        log.info("Mined set %s: reusing %s", key, folder)
        return Mined(Split(load_from_disk(str(folder)), str(folder), key), folder, cached=True)
    anchor, positive = train.dataset.column_names[:2]
    options = {name: mine_cfg.get(name) for name in MINER_OPTIONS}
    mined = mine_hard_negatives(
        train.dataset, model, anchor_column_name=anchor, positive_column_name=positive, corpus=corpus,
        output_format="triplet", verbose=False, **options,
    )  # fmt: skip
    if len(mined) == 0:
        raise PipelineError(
            f"the mine stage found no negative within mine.range_max={mine_cfg.range_max} that passes the margins: "
            "raise range_max or loosen mine.relative_margin / mine.absolute_margin."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f"{folder.name}.partial")
    mined.save_to_disk(str(partial))
    partial.replace(folder)  # a complete folder or none: an interrupted save is never reused
    log.info("Mined %d rows from %d pairs into %s", len(mined), len(train.dataset), folder)
    return Mined(Split(load_from_disk(str(folder)), str(folder), key), folder, cached=False)

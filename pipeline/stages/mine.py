"""The mine stage: (anchor, positive) pairs -> (anchor, positive, negative) rows with hard negatives.

``sentence_transformers.util.mine_hard_negatives`` does the mining, with the options under ``mine.*``
(names as there), the miner model (``model@miner=...``, or the model being trained) and the train columns'
prompts (``data.prompts``: the anchor's is the query prompt, the positive's the corpus prompt).

The mined set is cached in ``mine.cache_dir/KEY``. KEY digests everything the set depends on: every leaf
of the job's config but those :data:`NOT_KEYED` declares, each with its reason, not to change the set; the
train rows as the loss sees them (after renames, ``train_transform``, column selection and
``max_train_rows``), the candidate corpus, the miner (its node, the seed of a built one, the content of
the folder it loads from: ``build.model_key``), the options, the prompts, TF32 as torch has it set, the
versions of torch, transformers and sentence-transformers and a digest of this file;
``KEY/mined_from.json`` records them. A set older than
``mine.cache_max_age_days`` is mined again. Processes that want the same KEY take a file lock
(``KEY.lock``): one mines, the others wait and reuse its set. Writes nothing to MLflow: the job logs the
returned set as a dataset input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.stages import reuse
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
RECORD = "mined_from.json"  # in each cached set: what its key covers, where the rows came from, when
VERSIONED = ("torch", "transformers", "sentence-transformers")

_ROWS = "reaches the set only through the train rows and candidates, which the key hashes"
_AFTER = "acts after the set is mined"
_TOPOLOGY = "how ranks and machines meet: each machine's main rank mines alone"
# Config leaves (or nodes: every leaf under them) that never change the mined set, each with its reason.
NOT_KEYED: dict[str, str] = {
    "seed": "reaches the set through the miner's weights: a built miner's seed and a loaded one's folder are keyed",
    "guide": "the GIST losses' guide, used in training only",
    "data": _ROWS + " (its prompts are keyed)",
    "eval_data": "evaluation rows: the miner reads the train rows",
    "evaluators": "scores the model: the miner reads the train rows",
    "mine.cache_dir": "where the sets are kept",
    "mine.cache_max_age_days": "when a kept set is mined again, not what it holds",
    "loss": _AFTER,
    "training": _AFTER,
    "early_stopping": _AFTER,
    "guard": _AFTER,
    "baseline": _AFTER,
    "baseline_reuse": _AFTER,
    "optimized_metric": _AFTER,
    "tracking": "where and how the run is recorded",
    "name": "a name (the MLflow experiment's)",
    **dict.fromkeys(("hardware.num_processes", "hardware.num_machines", "hardware.machine_rank"), _TOPOLOGY),
    **dict.fromkeys(("hardware.main_process_ip", "hardware.main_process_port", "hardware.backend"), _TOPOLOGY),
    **dict.fromkeys(("hardware.timeout_s", "hardware.join_timeout_s"), _TOPOLOGY),
}


@dataclass(frozen=True)
class Mined:
    """The mined train set, its cache folder and whether it came from the cache."""

    split: Split
    folder: Path
    cached: bool


def prompts_for(train: Split, prompts: dict[str, str]) -> dict[str, str | None]:
    """``mine_hard_negatives``' prompts: the anchor column's prompt for queries, the positive's for the corpus."""
    anchor, positive = train.dataset.column_names[:2]
    return {"query_prompt": prompts.get(anchor), "corpus_prompt": prompts.get(positive)}


def key_inputs(
    train: Split, corpus: list[str] | None, miner_cfg: DictConfig, seed: int, mine_cfg: DictConfig,
    prompts: dict[str, str | None], leaves: dict, miner_key: str,
) -> dict:  # fmt: skip
    """What the mined set depends on, as JSON: the config's keyed leaves (``JobSpec.leaves``), the processed
    train rows, the candidates, the miner (and the seed of a built one; ``miner_key``: ``build.model_key``),
    the options, the prompts, TF32, the libraries that mine and this file."""
    miner = OmegaConf.to_container(miner_cfg, resolve=True)
    return {
        "config": reuse.keyed_leaves(leaves, NOT_KEYED),
        "train_rows": rows_digest(train.dataset),
        "train_columns": list(train.dataset.column_names),
        "corpus": _digest(json.dumps(corpus).encode()) if corpus is not None else None,
        "miner": miner,
        "miner_key": miner_key,
        "miner_seed": seed if miner.get("architecture") else None,
        "options": {key: mine_cfg.get(key) for key in MINER_OPTIONS},
        "prompts": prompts,
        "tf32": reuse.tf32_settings(),
        "versions": {name: metadata.version(name) for name in VERSIONED},
        "code": reuse.source_digest("stages/mine.py"),
    }


def cache_key(inputs: dict) -> str:
    """The cache folder's name for :func:`key_inputs`."""
    return _digest(json.dumps(inputs, sort_keys=True, default=str).encode())[:16]


def rows_digest(dataset) -> str:
    """SHA-256 of a data set's column names and rows, in order (what the miner reads, not the file it came from)."""
    digest = hashlib.sha256(json.dumps(dataset.column_names).encode())
    for batch in dataset.iter(batch_size=4096):
        digest.update(json.dumps(batch, sort_keys=True, default=str, ensure_ascii=False).encode())
    return digest.hexdigest()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mine(
    train: Split, load_miner: Callable[[], object], mine_cfg: DictConfig, corpus: list[str] | None,
    inputs: dict, may_mine: bool = True,
) -> Mined:  # fmt: skip
    """The mined set for ``train``: from ``mine.cache_dir`` when it holds a fresh one, else mined here.

    ``inputs`` is :func:`key_inputs`' record; ``load_miner`` is called only when this process mines.
    ``may_mine=False`` (a rank that waited for its machine's main rank): the set must be in the cache.
    """
    key = cache_key(inputs)
    folder = Path(mine_cfg.cache_dir).expanduser() / key
    max_age = mine_cfg.get("cache_max_age_days") if may_mine else None  # a waiting rank takes what its main rank left
    if _fresh(folder, max_age):
        return _reuse(folder, key)
    if not may_mine:
        raise RuntimeError(f"the mined set {key} is not in {folder.parent} after this machine's main rank mined it")
    from filelock import FileLock, Timeout

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.with_name(f"{key}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Mined set %s: another process is mining it; waiting for %s", key, lock.lock_file)
        lock.acquire()
    try:
        if _fresh(folder, max_age):  # mined by the process this one waited for
            return _reuse(folder, key)
        mined = _mine(train, load_miner(), mine_cfg, corpus, inputs["prompts"])
        _save(mined, folder, inputs, train)
    finally:
        lock.release()
    log.info("Mined %d rows from %d pairs into %s", len(mined), len(train.dataset), folder)
    return _loaded(folder, key, cached=False)


def _fresh(folder: Path, max_age_days: float | None) -> bool:
    """A complete set in ``folder`` (saved, then renamed into place), no older than ``max_age_days``."""
    info = folder / "dataset_info.json"
    if not info.is_file():
        return False
    age = (time.time() - info.stat().st_mtime) / 86400
    if max_age_days is not None and age >= float(max_age_days):
        log.info(
            "Mined set %s is %.1f days old (mine.cache_max_age_days=%s): mining it again", folder, age, max_age_days
        )
        return False
    return True


def _reuse(folder: Path, key: str) -> Mined:
    log.info("Mined set %s: reusing %s", key, folder)
    return _loaded(folder, key, cached=True)


def _loaded(folder: Path, key: str, cached: bool) -> Mined:
    from datasets import load_from_disk

    return Mined(Split(load_from_disk(str(folder)), str(folder), key), folder, cached=cached)


def _mine(train: Split, model, mine_cfg: DictConfig, corpus: list[str] | None, prompts: dict):
    from sentence_transformers.util import mine_hard_negatives

    anchor, positive = train.dataset.column_names[:2]
    options = {name: mine_cfg.get(name) for name in MINER_OPTIONS}
    mined = mine_hard_negatives(
        train.dataset, model, anchor_column_name=anchor, positive_column_name=positive, corpus=corpus,
        output_format="triplet", verbose=False, **prompts, **options,
    )  # fmt: skip
    if len(mined) == 0:
        raise PipelineError(
            f"the mine stage found no negative within mine.range_max={mine_cfg.range_max} that passes the margins: "
            "raise range_max or loosen mine.relative_margin / mine.absolute_margin."
        )
    return mined


def _save(mined, folder: Path, inputs: dict, train: Split) -> None:
    """Save into ``KEY.partial``, then rename it into place: a complete folder or none (the caller holds the lock)."""
    partial = folder.with_name(f"{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a process that died while saving
    mined.save_to_disk(str(partial))
    record = {**inputs, "train_source": train.source, "pairs": len(train.dataset), "rows": len(mined)}
    (partial / RECORD).write_text(json.dumps({**record, "mined_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)  # a set older than mine.cache_max_age_days
    partial.replace(folder)

"""The baseline's cache key: a digest of everything that decides what the evaluators give the starting model.

The key holds every leaf of the job's config (``JobSpec.leaves``) but those :data:`NOT_KEYED` declares,
each with its reason, not to change the baseline (a key added to the config later is keyed until it is
declared; ``tests/unit/test_cache_keys.py`` changes each leaf and checks the key, or that a reused
baseline equals a fresh one). Beside the config, what is actually scored, not names that could point at
other content:

- the model: every tensor of its state dict (so a Hub id, its revision, a packaged copy, a checkpoint
  folder and a random initialisation from ``architecture`` + ``seed`` all reduce to their weights; two
  different weights never share a key), its tokenizer, its modules' settings (``max_seq_length``,
  pooling, normalisation), prompts and similarity function, the ``max_seq_length`` it truncates to as
  loaded, the tokenizer's ``model_max_length``, truncation and padding sides, the weights' dtypes;
- the evaluators: their configs (class, options, columns, splits), the names of the evaluators
  scored, the rows of every split and corpus they read, the prompts they prepend, the Matryoshka
  dimensions they truncate to, their batch size;
- the numerics: effective precision, TF32 as torch has it set, device kind, padding-free packing, and the
  versions of torch, transformers and sentence-transformers;
- the code: a digest of the pipeline's source files that build, adjust and run the evaluators
  (:data:`SOURCES`), so that a fix there is never answered with a baseline the old code scored.

Writes nothing; ``pipeline.tracking.baseline`` finds and records runs by this key.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata

from pipeline.stages import reuse
from pipeline.stages.spec import EvaluatorSpec
from pipeline.stages.splits import Split

VERSIONED = ("torch", "transformers", "sentence-transformers")
# The pipeline's files (relative to the package) that load the scored model, build, adjust and run the evaluators.
SOURCES = (
    "stages/baseline.py",
    "stages/build.py",
    "stages/evaluate.py",
    "stages/spec.py",
    "stages/dataspec.py",
    "runtime/packing.py",
    "runtime/hardware.py",
    "job.py",
)

_TRAINING = "shapes training, never the starting model's scores"
_WEIGHTS = "reaches the baseline only through the starting model's weights, which the key hashes"
_ROWS = "reaches the baseline only through the rows read, which the key hashes"
_TOPOLOGY = "how ranks and machines meet: the baseline is scored on the main rank alone"
# Config leaves (or nodes: every leaf under them) that never change the baseline, each with its reason;
# KEPT holds the leaves under such a node that do.
NOT_KEYED: dict[str, str] = {
    "seed": _WEIGHTS,
    "baseline_reuse": "decides whether the cache is read, not what it holds",
    "name": "a name (the MLflow experiment's)",
    "optimized_metric": "ranks runs; the baseline holds every metric of the evaluators",
    "tracking": "where and how the run is recorded",
    "guard": "watches training",
    "early_stopping": "watches training",
    "mine": "mines training rows; the baseline scores the evaluation rows",
    "guide": "the GIST losses' guide, used in training only",
    "miner": "mines training rows",
    "loss": "the training objective (its Matryoshka dimensions, which the evaluators score too, are kept)",
    "model.peft": "a LoRA adapter starts as the identity (B = 0), and its weights are hashed with the model's",
    "data.name": "a name (the logged datasets')",
    "data.local_dir": _ROWS,
    "data.path": _ROWS,
    "data.subset": _ROWS,
    "data.max_train_rows": "limits the train split, which the baseline does not read",
    "data.splits.train": "names the train split, which the baseline does not read",
    "data.train_transform": "applies to the train split, which the baseline does not read",
    "data.negatives": "a train split layout, which the baseline does not read",
    **dict.fromkeys(("hardware.num_processes", "hardware.num_machines", "hardware.machine_rank"), _TOPOLOGY),
    **dict.fromkeys(("hardware.main_process_ip", "hardware.main_process_port", "hardware.backend"), _TOPOLOGY),
    **dict.fromkeys(("hardware.timeout_s", "hardware.join_timeout_s"), _TOPOLOGY),
    "hardware.cast_weights_once": _TRAINING,
    "hardware.training_attention": _TRAINING,
    "hardware.dropout_masks": _TRAINING,
    "hardware.merged_forward": _TRAINING,
    **{
        f"training.{name}": _TRAINING
        for name in [
            "per_device_train_batch_size",
            "num_train_epochs",
            "max_steps",
            "learning_rate",
            "warmup_steps",
            "warmup_ratio",
            "weight_decay",
            "lr_scheduler_type",
            "batch_sampler",
            "multi_dataset_batch_sampler",
            "eval_strategy",
            "eval_steps",
            "save_strategy",
            "save_steps",
            "save_total_limit",
            "logging_steps",
        ]
    },
    "training.seed": _WEIGHTS,
    "training.data_seed": "orders the training data",
}
KEPT = ("loss.matryoshka_dims",)


@dataclass(frozen=True)
class Scoring:
    """How the baseline is scored, besides the model: the job's slice that changes the numbers."""

    evaluators: dict[str, EvaluatorSpec]  # evaluator name -> its spec (``JobSpec.evaluators``)
    scored: list[str]  # ``{name}-{split}`` of each evaluator run
    splits: dict[str, Split]  # split name -> the rows read for it
    corpora: dict[str, Split]  # evaluator name -> extra retrieval corpus
    prompts: dict[str, list[str | None]]  # evaluator name -> prompt per text column
    matryoshka_dims: list[int]
    batch_size: int
    precision: str  # effective: fp32, bf16, fp16
    packing_row_length: int | None  # None: padded


def baseline_key(model, scoring: Scoring, leaves: dict) -> str:
    """A sha256 hex digest: equal keys give equal baseline metrics. ``leaves``: ``JobSpec.leaves``."""
    used = sorted({name.rsplit("-", 1)[1] for name in scoring.scored})
    parts = {
        "config": reuse.keyed_leaves(leaves, NOT_KEYED, KEPT),
        "loaded": loaded_settings(model),
        "weights": weights_digest(model),
        "tokenizer": tokenizer_digest(model.tokenizer),
        "modules": repr(model),
        "model_prompts": dict(model.prompts),
        "default_prompt_name": model.default_prompt_name,
        "similarity": model.similarity_fn_name,
        "truncate_dim": model.truncate_dim,
        "evaluators": {name: spec.record() for name, spec in scoring.evaluators.items()},
        "scored": sorted(scoring.scored),
        "splits": {name: rows_digest(scoring.splits[name].dataset) for name in used if name in scoring.splits},
        "corpora": {name: rows_digest(split.dataset) for name, split in sorted(scoring.corpora.items())},
        "prompts": scoring.prompts,
        "matryoshka_dims": list(scoring.matryoshka_dims),
        "batch_size": scoring.batch_size,
        "precision": scoring.precision,
        "device": device_kind(model),
        "packing_row_length": scoring.packing_row_length,
        "versions": {name: metadata.version(name) for name in VERSIONED},
        "tf32": reuse.tf32_settings(),
        "code": reuse.source_digest(*SOURCES),
    }
    return reuse.digest(parts)


def loaded_settings(model) -> dict:
    """What the loaded model truncates and computes with, as it is (not as configured)."""
    tokenizer = model.tokenizer
    return {
        "max_seq_length": model.max_seq_length,
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "dtypes": sorted({str(tensor.dtype) for tensor in model.state_dict().values()}),
    }


def weights_digest(model) -> str:
    """sha256 over each tensor of the state dict: its name, dtype, shape and bytes."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a fast tokenizer's whole definition (vocabulary, normaliser, pre-tokeniser), or of a
    slow one's vocabulary and settings. Not its ``truncation`` and ``padding``: each call sets them from
    its own arguments (the digest of a tokenizer that has encoded something would differ from a fresh
    one's); what truncates is keyed as loaded (:func:`loaded_settings`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        text = json.dumps(definition, sort_keys=True)
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {
        "class": type(tokenizer).__name__,
        "special": tokenizer.special_tokens_map,
        "lower": getattr(tokenizer, "do_lower_case", None),
    }
    return hashlib.sha256(f"{text}\n{json.dumps(settings, sort_keys=True, default=str)}".encode()).hexdigest()


def rows_digest(dataset) -> str:
    """sha256 of a split's rows as read (after column renames and selection): columns, types, values."""
    import pandas as pd

    frame = dataset.to_pandas()
    digest = hashlib.sha256(json.dumps([list(frame.columns), [str(t) for t in frame.dtypes]]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def device_kind(model) -> str:
    """The kind of device the model runs on: the GPU's name, or the CPU's architecture."""
    import torch

    if model.device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(model.device)}"
    return f"{model.device.type}:{platform.machine()}"

"""The baseline's cache key: a digest of everything that decides what the evaluators give the starting model.

The key is built from what is actually scored, not from names that could point at other content:

- the model: every tensor of its state dict (so a Hub id, its revision, a packaged copy, a checkpoint
  folder and a random initialisation from ``architecture`` + ``seed`` all reduce to their weights; two
  different weights never share a key), its tokenizer, its modules' settings (``max_seq_length``,
  pooling, normalisation), prompts and similarity function;
- the evaluators: their configs (class, options, columns, splits), the names of the evaluators
  scored, the rows of every split and corpus they read, the prompts they prepend, the Matryoshka
  dimensions they truncate to, their batch size;
- the numerics: effective precision, device kind, padding-free packing, and the versions of torch,
  transformers and sentence-transformers.

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


def baseline_key(model, scoring: Scoring) -> str:
    """A sha256 hex digest: equal keys give equal baseline metrics."""
    used = sorted({name.rsplit("-", 1)[1] for name in scoring.scored})
    parts = {
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
    }
    return reuse.digest(parts)


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
    slow one's vocabulary and settings."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
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

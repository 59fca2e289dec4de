"""Padding-free training and encoding: pack a batch's sentences into rows, spend no FLOP on padding.

A batch of sentences padded to its longest member wastes most of its compute on padding (STSb pairs
for MiniLM: 29.7 real tokens per pair of the 73.8 processed). Packing puts several sentences into
one row of ``hardware.packing_row_length`` tokens, or of the batch's longest sentence when that is
longer (first-fit decreasing, then balanced), and gives the model a block-diagonal 4D attention
mask (a token sees only its own sentence) and per-sentence position ids, so each sentence is
encoded exactly as it would be alone. The per-token outputs are then scattered back to the padded
layout, so pooling (mean, CLS, max, ...), Normalize and every later module run unchanged and return
one embedding per sentence in the original order.

It works as a pair of forward hooks on the model's input ``Transformer`` module, not as a collator or
a new module: every caller of the model takes the packed path with no change of its own, including
losses that call ``model(features)`` per column (MNRL, CoSENT, triplet, GIST and its guide), the
Cached* losses' own mini-batches, and ``model.encode`` inside the evaluators. Saved and logged models
are ordinary sentence-transformers models: hooks are not saved.

Where sentence-transformers already runs padding-free (its ``unpad_inputs`` path, which needs
FlashAttention-2 variable-length kernels, i.e. a CUDA GPU with ``flash-attn``), that path is kept and
packing stays off. Covered: encoder (bidirectional) models whose forward takes ``position_ids`` and a
4D mask with ``sdpa`` or ``eager`` attention (BERT, MiniLM, MPNet, RoBERTa/XLM-R, DistilBERT-style
encoders that pass the check below). Before it turns on, packing encodes a few sentences both ways and
compares: any difference beyond fp32 noise (or an error) turns it off with a notice. The check's
measured difference is kept in :func:`verdicts` under a key the caller gives (``build.packing_key``:
the model's content, versions, CPU, dtype, row length, attention, threads and this file), so later jobs
with the same key skip it; a refusal (an error) is not kept.

Writes to MLflow (when a run is active): the tag ``packing`` (``on: rows of N tokens`` or ``off: why``)
(``packing.guide`` for a GIST guide) and, via :func:`token_metrics`, ``packing_real_tokens``, ``packing_processed_tokens`` and
``packing_padded_tokens`` (what padding to the longest would have processed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.runtime.private_temp import private_temp
from pipeline.tracking import scrub, set_tags
from pipeline.tracking.scrub import MAX_TAG_LENGTH

if TYPE_CHECKING:
    from pipeline.runtime.hardware import Machine

log = logging.getLogger(__name__)

# Sentences of several lengths (one long) for the exactness check run before packing turns on.
PROBE_SENTENCES = (
    "A man is playing a guitar.",
    "Two dogs run across a snowy field while a child watches from the porch of a small wooden house.",
    "Hi.",
    "The stock market fell sharply today after the central bank unexpectedly raised interest rates "
    "by half a percentage point, its largest single increase in more than two decades, and signalled "
    "that further rises were likely before the end of the year.",
    "A woman slices an onion.",
)


def verdicts() -> Path:
    """Where the packed-vs-padded check's results are kept, one ``KEY.json`` each (in the user's own
    temporary folder, beside the models built from ``architecture``): a few bytes per model and setting."""
    return private_temp("packing")


@dataclass
class PackingStats:
    """Token counts over every forward that went through the packer (packed or not)."""

    packed_calls: int = 0
    sentences: int = 0
    real_tokens: int = 0  # tokens of the sentences themselves
    processed_tokens: int = 0  # tokens the model ran: packed rows (with their tail padding)
    padded_tokens: int = 0  # tokens padding every sentence to the batch's longest would have run


@dataclass(frozen=True)
class RowPlan:
    """Where each sentence of a batch goes: its row and its first column in that row."""

    rows: int
    width: int
    row_of: list[int]
    offset_of: list[int]


def plan_rows(lengths: list[int], row_length: int) -> RowPlan:
    """Place sentences in as few rows as first-fit decreasing needs, then balance the rows.

    Rows hold ``max(row_length, longest)`` tokens, so a sentence at the model's max length always
    fits. First-fit decreasing (longest first, each into the first row with room) fixes the number
    of rows; the same sentences dealt longest-first to the emptiest row usually fill those rows more
    evenly, and the packed width is the fullest row's fill, so the plan with the narrower width wins.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    capacity = max([row_length, *lengths])
    first_fit: list[int] = []
    placed_ff: dict[int, tuple[int, int]] = {}
    for index in order:
        row = next((r for r, used in enumerate(first_fit) if used + lengths[index] <= capacity), len(first_fit))
        if row == len(first_fit):
            first_fit.append(0)
        placed_ff[index] = (row, first_fit[row])
        first_fit[row] += lengths[index]
    balanced = [0] * len(first_fit)
    placed_lb: dict[int, tuple[int, int]] = {}
    for index in order:
        row = min(range(len(balanced)), key=lambda r: (balanced[r], r))
        placed_lb[index] = (row, balanced[row])
        balanced[row] += lengths[index]
    fill, placed = (
        (balanced, placed_lb) if max(balanced, default=0) < max(first_fit, default=0) else (first_fit, placed_ff)
    )
    return RowPlan(
        rows=len(fill),
        width=max(fill, default=0),
        row_of=[placed[i][0] for i in range(len(lengths))],
        offset_of=[placed[i][1] for i in range(len(lengths))],
    )


class Packer:
    """Forward hooks on a ``Transformer`` module that pack its text batches (see the module docstring).

    Args:
        transformer: the model's input module (``sentence_transformers`` ``Transformer``).
        row_length: tokens per packed row (at least the batch's longest sentence).
        position_offset: first position id of a sentence (``padding_idx + 1`` for RoBERTa-style
            embeddings, else 0), as the model numbers positions itself.
    """

    def __init__(self, transformer, row_length: int, position_offset: int = 0) -> None:
        self.transformer = transformer
        self.row_length = int(row_length)
        self.position_offset = int(position_offset)
        self.stats = PackingStats()
        self._pending: tuple[dict[str, Any], Any] | None = None  # the call in flight (not re-entrant)
        self._handles: list[Any] = []

    @property
    def eager(self) -> bool:
        """The model attends eagerly now (an additive float mask), read per call: training may switch it
        (to eager, or to eager with the dropout masks of ``pipeline.runtime.dropout``)."""
        from pipeline.runtime.dropout import ATTENTION

        return getattr(self.transformer.auto_model.config, "_attn_implementation", "sdpa") in ("eager", ATTENTION)

    # -- attach / detach ------------------------------------------------------------------------

    def attach(self) -> Packer:
        if not self._handles:
            self._handles = [
                self.transformer.register_forward_pre_hook(self._before, with_kwargs=True),
                self.transformer.register_forward_hook(self._after, with_kwargs=True),
            ]
            self.transformer._pipeline_packer = self
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(self.transformer, "_pipeline_packer", None) is self:
            del self.transformer._pipeline_packer

    # -- the hooks -------------------------------------------------------------------------------

    def _before(self, module, args: tuple, kwargs: dict):
        features = args[0] if args else kwargs.get("features")
        packed = self.pack(features) if isinstance(features, Mapping) else None
        self._pending = packed  # overwritten each call, so a forward that raised leaves nothing stale
        if packed is None:
            return None
        packed_features, _ = packed
        if args:
            return (packed_features, *args[1:]), kwargs
        return args, {**kwargs, "features": packed_features}

    def _after(self, module, args: tuple, kwargs: dict, output):
        packed, self._pending = self._pending, None
        if packed is None:
            return None
        _, (original, index) = packed
        return self.unpack(output, original, index)

    # -- packing ---------------------------------------------------------------------------------

    def pack(self, features: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
        """Packed copy of ``features`` and the index that scatters rows back; None to run padded."""
        import torch

        if not _packable(features):
            return None
        input_ids, mask = features["input_ids"], features["attention_mask"]
        count, padded_length = input_ids.shape
        lengths_t = mask.sum(dim=1)
        positions = torch.arange(padded_length, device=mask.device)
        real = positions[None, :] < lengths_t[:, None]  # (count, padded_length)
        right_padded = bool((mask.bool() == real).all())
        lengths = lengths_t.tolist()
        stats = self.stats
        stats.sentences += count
        stats.real_tokens += int(sum(lengths))
        stats.padded_tokens += count * padded_length
        plan = plan_rows(lengths, self.row_length) if right_padded and min(lengths, default=0) > 0 else None
        if plan is None or plan.rows * plan.width > count * padded_length:
            stats.processed_tokens += count * padded_length
            return None
        stats.packed_calls += 1
        stats.processed_tokens += plan.rows * plan.width

        device = input_ids.device
        row_of = torch.tensor(plan.row_of, device=device)
        offset_of = torch.tensor(plan.offset_of, device=device)
        destination = row_of[:, None] * plan.width + offset_of[:, None] + positions[None, :]
        flat_size = plan.rows * plan.width
        # Padding positions read a zero row appended after the packed tokens.
        index = torch.where(real, destination, torch.full_like(destination, flat_size))
        to = destination[real]

        def scatter(values, fill: int) -> Any:
            out = torch.full((flat_size,), fill, dtype=values.dtype, device=device)
            out[to] = values[real]
            return out.view(plan.rows, plan.width)

        pad_id = self.transformer.tokenizer.pad_token_id if self.transformer.tokenizer is not None else 0
        segment = scatter(torch.arange(count, device=device)[:, None].expand(count, padded_length), -1)
        block = segment[:, None, :, None] == segment[:, None, None, :]  # (rows, 1, width, width)
        if self.eager:
            dtype = self.transformer.auto_model.dtype
            block = torch.zeros(block.shape, dtype=dtype, device=device).masked_fill_(~block, torch.finfo(dtype).min)
        packed = {
            key: value
            for key, value in features.items()
            if key not in ("input_ids", "attention_mask", "token_type_ids")
        }
        packed["input_ids"] = scatter(input_ids, pad_id if pad_id is not None else 0)
        packed["attention_mask"] = block
        packed["position_ids"] = scatter(positions[None, :].expand(count, padded_length) + self.position_offset, 0)
        if isinstance(features.get("token_type_ids"), torch.Tensor):
            packed["token_type_ids"] = scatter(features["token_type_ids"], 0)
        return packed, (features, index)

    def unpack(self, output: dict[str, Any], original: dict[str, Any], index) -> dict[str, Any]:
        """Per-token outputs back in the padded layout, written into the caller's features dict."""
        output_name = self.transformer.module_output_name
        for key in (output_name, "all_layer_embeddings"):
            if key not in output:
                continue
            value = output[key]
            original[key] = (
                [_gather(v, index) for v in value] if isinstance(value, (list, tuple)) else _gather(value, index)
            )
        return original


def _packable(features: dict[str, Any]) -> bool:
    """A padded batch of token ids with a 2D mask, nothing the model positions itself."""
    import torch

    input_ids, mask = features.get("input_ids"), features.get("attention_mask")
    return (
        features.get("modality", "text") == "text"
        and isinstance(input_ids, torch.Tensor)
        and isinstance(mask, torch.Tensor)
        and input_ids.ndim == 2
        and mask.shape == input_ids.shape
        and "inputs_embeds" not in features
        and "position_ids" not in features
    )


def _gather(packed, index):
    """(rows, width, ...) -> (sentences, padded_length, ...) with zeros at padding positions."""
    import torch

    flat = packed.reshape(-1, *packed.shape[2:])
    flat = torch.cat([flat, flat.new_zeros((1, *flat.shape[1:]))])
    return flat[index.reshape(-1)].view(*index.shape, *flat.shape[1:])


# ----------------------------------------------------------------------------------------------
# Turning it on
# ----------------------------------------------------------------------------------------------


def unsupported_reason(model) -> str | None:
    """Why this model cannot be packed exactly (None: it can, pending the numeric check)."""
    import inspect

    from sentence_transformers.base.modules.transformer import Transformer

    first = model[0] if len(model) else None
    if not isinstance(first, Transformer):
        return f"the input module is {type(first).__name__}, not a Transformer"
    if getattr(first, "backend", "torch") != "torch":
        return f"the {first.backend} backend runs a fixed graph"
    if getattr(first, "can_flatten_inputs", False):
        return "sentence-transformers already runs it unpadded (flash-attention variable-length kernels)"
    config = first.auto_model.config
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return f"{config.model_type} is a decoder (causal) architecture"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ("sdpa", "eager"):
        return f"attention implementation {attention!r} (packing needs sdpa or eager)"
    if "position_ids" not in inspect.signature(first.auto_model.forward).parameters:
        return f"{type(first.auto_model).__name__}.forward takes no position_ids"
    return None


def position_offset(transformer) -> int:
    """First position id: ``padding_idx + 1`` for RoBERTa-style learned positions, else 0."""
    import torch

    for module in transformer.auto_model.modules():
        padding_idx = getattr(module, "padding_idx", None)
        if isinstance(padding_idx, int) and isinstance(
            getattr(module, "position_embeddings", None), torch.nn.Embedding
        ):
            return padding_idx + 1
    return 0


def probe(model, packer: Packer) -> float:
    """Largest difference between packed and padded token embeddings on :data:`PROBE_SENTENCES`."""
    import torch

    transformer = packer.transformer
    features = model.preprocess(list(PROBE_SENTENCES))
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.no_grad(), torch.autocast(model.device.type, enabled=False):  # compare in the weights' dtype
            padded = transformer(dict(features))[transformer.module_output_name]
            packed = packer.pack(dict(features))
            if packed is None:
                raise RuntimeError("the probe batch did not pack")
            packed_features, (original, index) = packed
            out = transformer(packed_features)
            unpacked = packer.unpack(out, dict(original), index)[transformer.module_output_name]
    finally:
        transformer.train(was_training)
    packer.stats = PackingStats()
    real = features["attention_mask"].bool()
    return float((padded[real].float() - unpacked[real].float()).abs().max())


def checked_error(model, packer: Packer, key: str | None, folder: Path | None = None) -> float:
    """:func:`probe`'s difference, read from ``folder/KEY.json`` (default :func:`verdicts`) when an earlier
    check with this key left it there, else measured and written there (atomically: a whole file or
    none). No key: measured."""
    folder = (folder or verdicts()) if key else None
    path = folder / f"{key}.json" if folder is not None else None
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            error = float(json.loads(path.read_text())["max_difference"])
            log.info("Packing: the packed-vs-padded check of this model and setting, from %s", path)
            return error
    error = probe(model, packer)
    if path is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as stream:
                json.dump({"max_difference": error}, stream)
            os.replace(stream.name, path)
        except OSError as problem:  # a folder this process cannot write: the next job checks again
            log.info("Packing: the check's result is not kept (%s)", problem)
    return error


def enable(model, machine: Machine, tag: str = "packing", key: str | None = None) -> Packer | None:
    """Attach a :class:`Packer` to ``model`` when ``hardware.packing`` (``machine.packing``) allows and it is exact.

    Returns the packer (its ``stats`` count tokens) or None when the model runs padded (or is None);
    the decision is logged and set as the MLflow tag ``tag``. ``key``: everything the check's result
    depends on (``build.packing_key``), to reuse an earlier check's result (:func:`checked_error`).
    """
    import torch

    if model is None:
        return None
    wanted, row_length = machine.packing, machine.packing_row_length
    packer = None
    if wanted == "false":
        decision = "off: hardware.packing=false"
    elif (reason := unsupported_reason(model)) is not None:
        decision = f"off: {reason}"
    else:
        transformer = model[0]
        candidate = Packer(transformer, row_length, position_offset(transformer))
        tolerance = 1e-4 if transformer.auto_model.dtype == torch.float32 else 3e-2
        try:
            error = checked_error(model, candidate, key)
        except Exception as problem:  # noqa: BLE001 - any architecture-specific refusal of a 4D mask or position ids
            decision = f"off: the model refused packed inputs ({type(problem).__name__}: {str(problem)[:200]})"
        else:
            if error <= tolerance:
                packer = candidate.attach()
                decision = f"on: rows of {row_length} tokens (packed vs padded max difference {error:.1e})"
            else:
                decision = f"off: packed and padded outputs differ by {error:.1e} (> {tolerance:.0e})"
    if packer is None and wanted == "true":
        log.warning("Packing requested (hardware.packing=true) but %s; running padded.", decision[5:])
    else:
        log.info("Packing %s", decision)
    _set_tag(tag, decision)
    return packer


def disable(model) -> None:
    """Remove a packer attached by :func:`enable` (the model then runs padded)."""
    packer = getattr(model[0], "_pipeline_packer", None) if len(model) else None
    if packer is not None:
        packer.detach()


@contextlib.contextmanager
def uncounted(packer: Packer | None) -> Iterator[None]:
    """Forwards inside the block leave the packer's token counts as they were (the baseline: its
    counts must not depend on whether it was computed or copied from another run)."""
    if packer is None:
        yield
        return
    saved = dataclasses.replace(packer.stats)
    try:
        yield
    finally:
        packer.stats = saved


def token_metrics(packer: Packer | None) -> dict[str, float]:
    """The packer's token counts, as the job logs them (empty without a packer)."""
    if packer is None:
        return {}
    return {
        "packing_real_tokens": float(packer.stats.real_tokens),
        "packing_processed_tokens": float(packer.stats.processed_tokens),
        "packing_padded_tokens": float(packer.stats.padded_tokens),
    }


def _set_tag(tag: str, decision: str) -> None:
    set_tags({tag: scrub(decision, limit=MAX_TAG_LENGTH)})

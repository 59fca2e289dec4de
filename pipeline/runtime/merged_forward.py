"""Every text column of a training batch embedded in one forward (``hardware.merged_forward``).

sentence-transformers' losses embed their columns through ``embed_columns``, which merges the candidate
columns (``merge_feature_batches``: padded to the widest, concatenated) but keeps the first column in a
forward of its own, because the merged batch pads every row to the widest column and a short query
column would pay for a long document's width. With packed rows (``hardware.packing``) padding is never
computed, so that cost is gone: :func:`merge_columns` makes the loss call ``embed_columns`` with
``separate_first=False``. A step of MNRL on pairs then runs one forward and one backward instead of two:
one 47 MB word-embedding gradient instead of two, and every product over all rows (0.85-0.89x the step on
the AVX-512 machine, BENCHMARKS.md, issue 31).

What changes: the dropout masks are drawn for all columns at once instead of column by column, so the
draws (not their distribution) move, and bf16 products run over other row blocks. Columns that take
different prompts (``data.prompts``) preprocess to different features, so the build keeps the loss's own
forward for them and says so (``stages.build.why_not_merged``); where columns still cannot merge (a
model's other per-column features) the library falls back to one forward per column, with its warning.
Applies only to a loss the catalogue marks ``one_forward`` (its forward is exactly ``embed_columns`` then
``compute_loss_from_embeddings``); never to a wrapped one (Matryoshka), a cached one or GIST's.
"""

from __future__ import annotations

import logging

from pipeline.runtime import catalogue

log = logging.getLogger(__name__)


def merge_columns(loss, off: str | None) -> str:
    """Make ``loss`` embed all its columns in one forward unless ``off`` says why not (the build decides:
    ``stages.build.why_not_merged``) or the loss embeds its columns its own way; returns the decision, as the
    tag ``merged_forward`` records it (``on`` or ``off: why``)."""
    name = type(loss).__name__
    if off is None and (name not in catalogue.LOSSES or not catalogue.LOSSES[name].one_forward):
        off = f"{name} embeds its columns its own way"
    if off is not None:
        return f"off: {off}"
    loss.forward = _merged(loss)
    log.info("Training: every text column of a batch in one forward (%s)", name)
    return "on"


def _merged(loss):
    from sentence_transformers.base.losses.merged_forward import embed_columns

    def forward(sentence_features, labels):
        # loss.model read at each call: the trainer may swap in its wrapped (DDP) model
        embeddings = embed_columns(loss.model, sentence_features, separate_first=False)
        return loss.compute_loss_from_embeddings(embeddings, labels)

    return forward

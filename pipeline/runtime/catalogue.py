"""Facts about the library classes a config may name, in one place: what each loss trains on and its
chance level, how each evaluator takes a split's rows and its prompts.

A class named by ``loss._target_`` or an evaluator's ``_target_`` without an entry here is refused in
one line (:func:`loss`, :func:`evaluator`), never skipped by the checks that read these facts
(``stages.validate``'s column check, ``runtime.guard``'s chance-loss check, ``stages.build``'s
evaluator inputs and prompts). A new class gets one entry, read from its docstring ("Inputs" table)
in sentence-transformers. The metric names an evaluator logs come from the class itself
(:func:`logged_metrics`: it runs on two rows), never from a list kept here. Writes nothing.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from pipeline import PipelineError

LN_CANDIDATES = "ln(candidates)"  # every candidate scored alike: the loss is ln(candidates per anchor)


@dataclass(frozen=True)
class Loss:
    """What a loss trains on and what its value means."""

    min_texts: int  # text columns, at least
    max_texts: int | None  # at most (None: any number, e.g. (anchor, positive, negative_1, ...))
    label: bool  # needs a score / label column
    in_batch_negatives: bool  # the other rows of the batch are negatives
    chance: str | None  # its value when the embeddings carry no information (None: not modelled; no guard check)
    # its forward is sentence-transformers' ``embed_columns`` then ``compute_loss_from_embeddings``, nothing else:
    # every column may be embedded in one forward (``hardware.merged_forward``, pipeline/runtime/merged_forward.py)
    one_forward: bool = False

    @property
    def shape(self) -> str:
        low, high = self.min_texts, self.max_texts
        texts = f"{low}" if low == high else f"{low}+" if high is None else f"{low}-{high}"
        return f"{texts} text columns" + (" and a score/label column" if self.label else " and no label column")


LOSSES = {
    "MultipleNegativesRankingLoss": Loss(2, None, False, True, LN_CANDIDATES, one_forward=True),
    "CachedMultipleNegativesRankingLoss": Loss(2, None, False, True, LN_CANDIDATES),
    "MultipleNegativesSymmetricRankingLoss": Loss(2, 2, False, True, None, one_forward=True),
    "GISTEmbedLoss": Loss(2, 3, False, True, None),  # the guide masks candidates: no fixed chance level
    "CachedGISTEmbedLoss": Loss(2, 3, False, True, None),
    "CoSENTLoss": Loss(2, 2, True, False, None, one_forward=True),
    "AnglELoss": Loss(2, 2, True, False, None, one_forward=True),
    "CosineSimilarityLoss": Loss(2, 2, True, False, None, one_forward=True),
    "TripletLoss": Loss(3, 3, False, False, None, one_forward=True),
}


@dataclass(frozen=True)
class Evaluator:
    """How an evaluator takes a split: its inputs and where prompts go."""

    retrieval: bool  # (queries, corpus, relevant_docs) built from the rows; else the columns in order
    text_arguments: tuple[str, ...]  # attributes holding its texts, in column order: prompts are prepended
    prompt_arguments: tuple[str, ...]  # or: its own prompt arguments, in column order
    scored: bool = False  # a score column after the texts (``scores``)


EVALUATORS = {
    "EmbeddingSimilarityEvaluator": Evaluator(False, ("sentences1", "sentences2"), (), scored=True),
    "TripletEvaluator": Evaluator(False, ("anchors", "positives", "negatives"), ()),
    "InformationRetrievalEvaluator": Evaluator(True, (), ("query_prompt", "corpus_prompt")),
}


def loss(class_name: str) -> Loss:
    """The facts of the loss class ``class_name``; a class without an entry is refused."""
    if class_name not in LOSSES:
        raise PipelineError(
            f"loss {class_name}: pipeline/runtime/catalogue.py has no entry for it (its columns, in-batch negatives, "
            f"chance level): add one to LOSSES, or pick one of {', '.join(LOSSES)}."
        )
    return LOSSES[class_name]


def evaluator(class_name: str, name: str = "") -> Evaluator:
    """The facts of the evaluator class ``class_name`` (of the evaluator ``name``); a class without an entry
    is refused."""
    if class_name not in EVALUATORS:
        raise PipelineError(
            f"evaluator {name or class_name!r}: pipeline/runtime/catalogue.py has no entry for {class_name} (its "
            "inputs, its prompts): "
            f"add one to EVALUATORS, or pick one of {', '.join(EVALUATORS)}."
        )
    return EVALUATORS[class_name]


def logged_metrics(arguments: dict[str, Any], name: str = "") -> tuple[str, tuple[str, ...]]:
    """(primary metric, every metric name) the evaluator class ``arguments['_target_']`` logs with these
    arguments, without its ``{name}-{split}_`` prefix: the class run on two rows in its input shape
    (:class:`Evaluator`) by a two-word static-embedding model whose similarity is cosine, sentence-transformers'
    default (a model whose config names another similarity logs that one's names where the arguments leave it
    open). Milliseconds; once per class and arguments. A class refusing its arguments is refused in one line."""
    return _logged_metrics(json.dumps(arguments, sort_keys=True), name)


@functools.cache
def _logged_metrics(arguments: str, name: str) -> tuple[str, tuple[str, ...]]:
    from hydra.utils import instantiate

    config = json.loads(arguments)
    class_name = str(config["_target_"]).rsplit(".", 1)[-1]
    facts = evaluator(class_name, name)
    try:
        built = instantiate({**config, "_partial_": True, "name": "probe"})(**_two_rows(facts))
        library = logging.getLogger("sentence_transformers")
        level = library.level
        library.setLevel(logging.WARNING)  # its scores on two made-up rows are no result to show
        try:
            scores = built(_probe_model())
        finally:
            library.setLevel(level)
    except (TypeError, ValueError, KeyError) as error:
        raise PipelineError(
            f"evaluators.{name}.evaluator: {class_name} refused its arguments "
            f"({', '.join(k for k in config if not k.startswith('_')) or 'none'}): {error}; fix them."
        ) from None
    names = tuple(key.removeprefix("probe_") for key in scores)
    return str(built.primary_metric).removeprefix("probe_"), names


def _two_rows(facts: Evaluator) -> dict[str, Any]:
    """Two rows in the class's input shape: (queries, corpus, relevant) for retrieval, else its text
    columns in order and a score column."""
    if facts.retrieval:
        return {
            "queries": {"q0": "a", "q1": "b"},
            "corpus": {"d0": "a", "d1": "b"},
            "relevant_docs": {"q0": {"d0"}, "q1": {"d1"}},
        }
    rows = dict(zip(facts.text_arguments, [["a", "b"], ["b", "a b"], ["a b", "b"]]))
    return {**rows, "scores": [0.2, 0.8]} if facts.scored else rows


@functools.cache
def _probe_model():
    """A real SentenceTransformer of two words and four dimensions (a StaticEmbedding: no download)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=4)], device="cpu")


def first_dev_metric(evaluators, first: str | None = None) -> str | None:
    """``${first_dev_metric:${oc.select:evaluators,null}}`` (``optimized_metric``'s default): the dev metric of the
    first evaluator (``first``, the option ``evaluator=NAME`` selected, when given) by its primary metric: its
    ``primary_metric``, else its class's own (:func:`logged_metrics`); null when none runs, or when the class is
    refused (the job spec then says why)."""
    nodes = dict(evaluators or {})
    if first in nodes:
        nodes = {first: nodes[first]}
    for key, node in nodes.items():
        primary = node.get("primary_metric")
        if primary is None:
            try:
                primary = logged_metrics(OmegaConf.to_container(node.evaluator, resolve=True), str(key))[0]
            except PipelineError:
                return None
        return f"{node.name}-dev_{primary}"
    return None


OmegaConf.register_new_resolver("first_dev_metric", first_dev_metric, replace=True)

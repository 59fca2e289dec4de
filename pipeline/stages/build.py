"""The build step: the model (and a GIST guide), the loss and the evaluators, from their configs.

Runs after every check that needs no model. Models load on the CPU; Hub ids resolve offline first
(``pipeline.runtime.offline``). Writes nothing to MLflow.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.runtime.offline import resolve_model
from pipeline.stages.splits import Split

log = logging.getLogger(__name__)


def load_model(model_cfg: DictConfig, seed: int, key: str = "model"):
    """A SentenceTransformer from a Hub id / folder, or built from ``architecture`` (random weights)."""
    from sentence_transformers import SentenceTransformer

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

    if not model_cfg.get("tokenizer"):
        raise PipelineError(
            f"{key}.architecture is set but {key}.tokenizer is not: name a tokenizer (Hub id or folder)."
        )
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
    modules = [
        transformer,
        Pooling(transformer.get_embedding_dimension(), pooling_mode=model_cfg.get("pooling", "mean")),
    ]
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
            raise PipelineError(
                f"loss {factory.func.__name__} needs a guide model: set guide=minilm (or another model)."
            )
        return factory(model=model, guide=guide)
    return factory(model=model)


def loss_takes_guide(loss_cfg: DictConfig) -> bool:
    from hydra.utils import get_class

    return "guide" in inspect.signature(get_class(loss_cfg._target_)).parameters


# Evaluator config keys the pipeline reads itself; every other key is passed to the evaluator class.
EVALUATOR_KEYS = ("columns", "primary_metric", "metrics", "splits", "score_range", "label", "corpus")


def build_evaluators(
    specs: dict[str, DictConfig], needed: dict[str, list[str]], splits: dict[str, Split], batch_size: int,
    corpora: dict[str, Split] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every evaluator on every split it scores: ``{name}-{split}`` -> evaluator (built, not run).

    ``needed`` is split -> evaluator names (``evaluators.splits_needed``); ``corpora`` holds the extra
    corpus read for an ``ir`` evaluator (``evaluator.corpus``), by evaluator name.
    """
    built = {}
    for split, names in needed.items():
        for name in names if split in splits else []:  # an optional split the data does not have
            corpus = (corpora or {}).get(name)
            built[f"{name}-{split}"] = build_evaluator(specs[name], split, splits[split], batch_size, corpus)
    return built


def build_evaluator(evaluator_cfg: DictConfig, split: str, data: Split, batch_size: int, corpus: Split | None = None):
    """The evaluator class named by ``evaluator._target_`` over one split, named ``{name}-{split}``.

    A class that takes ``relevant_docs`` (InformationRetrievalEvaluator) gets queries, corpus and
    relevance built from the rows (:func:`retrieval_inputs`); the others get the columns in order.
    """
    from hydra.utils import get_class, instantiate

    options = {k: v for k, v in evaluator_cfg.items() if k not in EVALUATOR_KEYS}
    options["name"] = f"{evaluator_cfg.name}-{split}"
    factory = instantiate(OmegaConf.create(options))
    if "relevant_docs" in inspect.signature(get_class(evaluator_cfg._target_)).parameters:
        label = evaluator_cfg.get("label")
        label = label if label in data.dataset.column_names else None
        queries, documents, relevant = retrieval_inputs(data, list(evaluator_cfg.columns), label, corpus)
        return factory(queries=queries, corpus=documents, relevant_docs=relevant, batch_size=batch_size)
    columns = [data.dataset[c] for c in evaluator_cfg.columns]
    return factory(*columns, batch_size=batch_size)


def retrieval_inputs(data: Split, columns: list[str], label: str | None = None, corpus: Split | None = None):
    """(queries, corpus, relevant_docs) for InformationRetrievalEvaluator from one split's rows.

    Queries: the first column, deduplicated. Corpus: every distinct text of the other columns (every
    candidate, relevant or not), plus ``corpus`` (``id``/``text`` rows). Relevant: per query, the second
    column of its rows (only rows whose ``label`` is 1 when given). Queries with nothing relevant are
    dropped and counted; none left is an error.
    """
    rows = data.dataset.to_pandas()
    query_ids: dict[str, str] = {}
    doc_ids: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for row in rows.itertuples(index=False):
        values = row._asdict()
        qid = query_ids.setdefault(str(values[columns[0]]), f"q{len(query_ids)}")
        for column in columns[1:]:
            doc_ids.setdefault(str(values[column]), f"d{len(doc_ids)}")
        if label is None or float(values[label]) == 1:
            relevant.setdefault(qid, set()).add(doc_ids[str(values[columns[1]])])
    documents = {cid: text for text, cid in doc_ids.items()}
    if corpus is not None:
        for cid, text in zip(corpus.dataset["id"], corpus.dataset["text"]):
            if str(text) not in doc_ids:
                documents[f"c{cid}"] = str(text)
    dropped = len(query_ids) - len(relevant)
    if dropped:
        log.info(
            "%s: %d of %d queries have no relevant document and are left out", data.source, dropped, len(query_ids)
        )
    if not relevant:
        raise PipelineError(
            f"{data.source}: no query has a relevant document (no row labelled 1 in column {label!r}): "
            "the retrieval evaluator needs at least one (query, relevant document) row."
        )
    queries = {qid: text for text, qid in query_ids.items() if qid in relevant}
    return queries, documents, relevant

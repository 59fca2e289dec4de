"""The build step: the model (and a GIST guide), the loss, the evaluators and the mine stage's model, from
the job spec, the data and the resolved machine (:func:`build`).

Runs after every check that needs no model. Models load on the CPU and move to the machine's device; Hub
ids resolve offline first (``pipeline.runtime.offline``). Writes two tags to MLflow, no more: the packing
decision (``pipeline.runtime.packing`` sets it) and ``merged_forward`` (the loss's forwards,
``pipeline.runtime.merged_forward``); the job logs what :class:`Built` reports.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.runtime import catalogue, packing
from pipeline.runtime.hardware import Machine
from pipeline.runtime.merged_forward import merge_columns
from pipeline.runtime.offline import resolve_model
from pipeline.runtime.private_temp import private_temp
from pipeline.stages import reuse
from pipeline.stages.spec import EvaluatorSpec, JobSpec, LossSpec
from pipeline.stages.splits import LABEL_COLUMNS, LoadedData, Split
from pipeline.tracking import set_tags

log = logging.getLogger(__name__)

# Loaded models by what they are built from: the starting model, and a guide or miner beside it.
MODELS = reuse.ProcessCache("model", size=3)


@dataclass(frozen=True)
class Built:
    """Everything mining, training and evaluation take besides the data: the models, evaluators and loss."""

    model: Any  # on the machine's device, packed where exact, with its LoRA adapter when ``model.peft`` asks
    packer: packing.Packer | None
    evaluators: dict[str, Any]  # ``{name}-{split}`` -> evaluator, every split some evaluator scores
    loss: Any = None  # the training loss around the model (and its guide); None without a train stage
    model_reused: bool = False  # the model came from the process cache (tag ``load.cache.model``)
    lora: dict[str, int] | None = None  # the adapter's trainable and total parameters
    miner_key: str | None = None  # what the miner model is built from (the mine stage's cache key), with a mine stage
    load_miner: Callable[[], Any] | None = None  # the miner model, loaded when called; with a mine stage


def build(spec: JobSpec, data: LoadedData, machine: Machine) -> Built:
    """The model (packed where exact), every evaluator on every split it scores (``{name}-{split}``),
    with a train stage the loss (around a guide model when it takes one), with a mine stage the miner."""
    model, reused, loaded_from = shared_model(spec.model, spec.seed)
    model = model.to(machine.device)  # evaluate-only runs too
    check_matryoshka_dims(spec.loss.matryoshka_dims, model)
    lora = add_lora(model, spec.peft) if spec.peft is not None else None
    guide, guide_from = None, None
    if spec.loss.needs_guide:  # worked out only when training
        guide, _, guide_from = shared_model(spec.guide, spec.seed, key="guide")
        guide = guide.to(model.device)
    packer = packing.enable(model, machine, key=packing_key(model, loaded_from, machine, spec.peft))
    if guide is not None:
        packing.enable(guide, machine, tag="packing.guide", key=packing_key(guide, guide_from, machine, None))
    evaluators = build_evaluators(
        spec.evaluators, spec.splits_needed, data.eval_splits, machine.eval_batch_size, data.corpora
    )
    model.prompts.update(spec.prompts)  # saved with the model: encode(prompt_name=COLUMN)
    prompts = {evaluator.name: list(evaluator.prompts) for evaluator in spec.evaluators}
    evaluators = adjust_evaluators(evaluators, spec.loss.matryoshka_dims, prompts)
    loss = build_loss(spec.loss, model, guide) if spec.stages.train else None
    if loss is not None:
        set_tags({"merged_forward": merge_columns(loss, why_not_merged(machine, packer, column_prompts(spec)))})
    miner = (miner_key(spec), miner_loader(spec, model)) if spec.stages.mine else (None, None)
    return Built(model, packer, evaluators, loss, reused, lora, *miner)


def why_not_merged(
    machine: Machine, packer: packing.Packer | None, prompts: set[str | None] = frozenset()
) -> str | None:
    """Why the loss keeps one forward per text column (``hardware.merged_forward``), or None where it may
    embed them all in one (``runtime.merged_forward``): packed rows on a CPU, one prompt for every column
    (``prompts``: :func:`column_prompts`; with others the library embeds each column apart, as it warns)."""
    if not machine.merged_forward:
        return "hardware.merged_forward=false"
    if machine.accelerator != "cpu":
        return f"{machine.accelerator} (measured on a CPU only)"
    if packer is None:
        return "padded batches (merging would pad every column to the widest)"
    if len(prompts) > 1:
        return "the text columns take different prompts (data.prompts): their features cannot merge"
    return None


def column_prompts(spec: JobSpec) -> set[str | None]:
    """The prompt of each text column training embeds (None: none), over every train set, the mined
    ``negative`` included; unknown columns count as unprompted."""
    prompts = spec.training_prompts
    columns = {c for data in spec.data.train_sets.values() for c in data.layout if c not in LABEL_COLUMNS}
    columns |= {"negative"} if spec.stages.mine else set()
    return {prompts.get(column) for column in columns} if columns else {*prompts.values(), None}


def miner_key(spec: JobSpec) -> str:
    """What the mine stage's model is built from: ``miner`` when set, else the job's own model."""
    return model_key(spec.miner or spec.model, spec.seed, "miner" if spec.miner else "model")


def miner_loader(spec: JobSpec, model: Any) -> Callable[[], Any]:
    """The mine stage's model, loaded only when called (a set the mine cache holds needs none): ``miner``
    when set, else ``model``, the job's own."""
    if spec.miner is None:
        return lambda: model
    return lambda: shared_model(spec.miner, spec.seed, key="miner")[0]


def shared_model(model_cfg: DictConfig, seed: int, key: str = "model") -> tuple[Any, bool, str | None]:
    """A fresh copy of the model ``load_model`` builds, loaded once per process (``reuse``); whether it was
    loaded already; a digest of what it was built from (:func:`model_key`), None where that is not the
    content of local files (a Hub id the Hub may change). Each caller gets its own deep copy, so no job
    sees what another one trained; on a hit torch's random state is set to what the load left, so what
    follows draws what it would after a load."""
    import torch

    if model_cfg.get("architecture") and not model_cfg.get("tokenizer"):
        return load_model(model_cfg, seed, key), False, None  # says what is missing

    def load():
        model = load_model(model_cfg, seed, key)
        return model, torch.get_rng_state()

    cache_key = model_key(model_cfg, seed, key)
    if model_cfg.get("architecture") and not (architecture_folder(model_cfg, seed) / "model.safetensors").is_file():
        MODELS.discard(cache_key)  # the folder the model was built in is gone (checkpoints name it): build again
    (pristine, random_state), hit = MODELS.get(cache_key, load)
    if hit:
        torch.set_rng_state(random_state)
        log.info("%s: from the process cache (loaded by an earlier job of this process)", key)
    return copy.deepcopy(pristine), hit, cache_key if from_files(model_cfg, key) else None


def from_files(model_cfg: DictConfig, key: str) -> bool:
    """Whether :func:`model_key` digests the model's files: it loads from a local folder (or is built from
    ``architecture`` with a tokenizer from one), not from a Hub id."""
    source, name = (
        (model_cfg.tokenizer, "tokenizer")
        if model_cfg.get("architecture")
        else (model_cfg.name_or_path, "name_or_path")
    )
    return Path(resolve_model(str(source), key=f"{key}.{name}")).is_dir()


def packing_key(model, loaded_from: str | None, machine: Machine, peft: DictConfig | None) -> str | None:
    """Everything packing's packed-vs-padded check (``packing.checked_error``) depends on: what the model
    was loaded from (:func:`model_key`: its files' bytes, its node, the seed of a built one) and its LoRA
    adapter, the model as it runs (dtype, device, attention implementation, max length), the row length,
    the precision, torch's threads, the CPU's capabilities (which kernels run), the libraries' versions
    and the packer's code. None (check every time) where the model's origin is not known."""
    import torch

    if loaded_from is None:
        return None
    transformer = model[0]
    config = getattr(getattr(transformer, "auto_model", None), "config", None)
    device = model.device
    return reuse.digest(
        {
            "loaded_from": loaded_from,
            "peft": OmegaConf.to_container(peft, resolve=True) if peft is not None else None,
            "dtype": str(getattr(getattr(transformer, "auto_model", None), "dtype", None)),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
            "attention": getattr(config, "_attn_implementation", None),
            "max_seq_length": model.max_seq_length,
            "row_length": machine.packing_row_length,
            "precision": machine.precision.effective,
            "threads": torch.get_num_threads(),
            "cpu": torch.cpu.get_capabilities(),
            "versions": {name: metadata.version(name) for name in ("torch", "transformers", "sentence-transformers")},
            "code": reuse.source_digest("runtime/packing.py"),
        }
    )


# ``load_model`` is given its model node and the seed, nothing else of the job: every other config leaf
# cannot change what it loads. Under the node, leaves that do not change it either, with the reason:
MODEL_NOT_KEYED: dict[str, str] = {"peft": "the adapter is added to each job's copy after the load"}
# A model built from ``architecture`` takes only the tokenizer from its folder: the folder's weights are skipped.
WEIGHT_FILES = (".safetensors", ".bin", ".onnx", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".gguf")


def model_key(model_cfg: DictConfig, seed: int, key: str) -> str:
    """Everything ``load_model`` builds from: every leaf of the model node but :data:`MODEL_NOT_KEYED`, the
    seed of a random initialisation, and the content of the folder it loads from (every file's bytes, read
    each time: a rewrite in place is seen; only the tokenizer's files for a model built from ``architecture``),
    not its path."""
    spec = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k not in MODEL_NOT_KEYED}
    source = str(model_cfg.tokenizer) if model_cfg.get("architecture") else str(model_cfg.name_or_path)
    resolved = resolve_model(source, key=f"{key}.{'tokenizer' if model_cfg.get('architecture') else 'name_or_path'}")
    skip = WEIGHT_FILES if model_cfg.get("architecture") else ()
    content = reuse.content_digest(Path(resolved), skip) if Path(resolved).is_dir() else resolved
    built = str(architecture_folder(model_cfg, seed)) if model_cfg.get("architecture") else None
    return reuse.digest({"spec": spec, "seed": seed if built else None, "content": content, "built_in": built})


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
    folder = architecture_folder(model_cfg, seed)
    if not (folder / "model.safetensors").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pipeline-model-", dir=folder.parent) as building:
            # Not save_pretrained: it writes on rank 0 only once a process group exists (several ranks).
            config.save_pretrained(building)
            tokenizer.save_pretrained(building)
            save_file(auto_model.state_dict(), f"{building}/model.safetensors")
            with contextlib.suppress(OSError):  # another process (rank) built the same folder first
                os.rename(building, folder)
    transformer = Transformer(str(folder), max_seq_length=model_cfg.get("max_seq_length"))
    modules = [
        transformer,
        Pooling(transformer.get_embedding_dimension(), pooling_mode=model_cfg.pooling),
    ]
    if model_cfg.get("normalize"):
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu")


def architecture_folder(model_cfg: DictConfig, seed: int) -> Path:
    """Where a model built from ``architecture`` is saved: a folder that outlives the job, named by what it
    holds (a LoRA adapter saved in a checkpoint names it as its base, so resuming and restoring the best
    checkpoint find it again)."""
    arch = OmegaConf.to_container(model_cfg.architecture, resolve=True)
    model_type = arch.pop("model_type")
    digest = hashlib.sha256(f"{model_type}{sorted(arch.items())}{model_cfg.tokenizer}{seed}".encode()).hexdigest()
    return private_temp("models") / digest[:16]


def add_lora(model, peft_cfg: DictConfig) -> dict[str, int]:
    """Add a peft LoRA adapter to the model's transformer (only its weights train); return the
    trainable and total parameter counts."""
    import torch
    from peft import LoraConfig

    targets = list(peft_cfg.target_modules) if peft_cfg.get("target_modules") else None
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    fix = f"the model's linear modules are {linear}: name some of them in model.peft.target_modules"
    if targets and not set(targets) & set(linear):
        raise PipelineError(f"model.peft.target_modules={targets} match no module of the model; {fix}.")
    config = LoraConfig(
        r=int(peft_cfg.r), lora_alpha=peft_cfg.alpha, lora_dropout=peft_cfg.dropout, target_modules=targets
    )
    try:
        model.add_adapter(config)
    except ValueError as error:  # peft has no default target modules for this architecture, or none matched
        raise PipelineError(f"model.peft: {str(error).splitlines()[0]}; {fix}.") from None
    parameters = list(model.parameters())
    return {
        "peft_trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "peft_total_parameters": sum(p.numel() for p in parameters),
    }


def merge_lora(model, adapter_dir: Path) -> None:
    """Merge the LoRA adapter saved in ``adapter_dir`` (``save_pretrained`` of the trained model) into the
    base weights, in place, with peft's ``merge_and_unload``: an ordinary model again.

    Checked exactly, layer by layer (else PipelineError naming the layer): the adapter read back holds
    the trained LoRA weights, and each merged weight equals W + scaling * B @ A within its dtype's
    rounding, ``scaling`` being peft's own for that layer (lora_alpha / r; lora_alpha / sqrt(r) with rslora).
    """
    from peft import PeftModel

    backbone = model.transformers_model
    trained = {name: lora_weights(layer) for name, layer in lora_layers(backbone)}
    backbone.delete_adapter(list(backbone.peft_config))  # transformers' own adapter, off: the base layers
    wrapped = PeftModel.from_pretrained(backbone, str(adapter_dir))  # wraps the backbone's layers in place
    loaded = dict(lora_layers(backbone))
    for name in sorted(set(trained) | set(loaded)):
        if (
            name not in trained
            or name not in loaded
            or not all(map(torch_equal, trained[name], lora_weights(loaded[name])))
        ):
            raise PipelineError(
                f"model.peft: the adapter in {adapter_dir} is not the one trained (layer {name!r} differs): the "
                "run's adapter/ artifact holds the trained one."
            )
    expected = {name: merged_weight(layer) for name, layer in loaded.items()}
    if (
        wrapped.merge_and_unload() is not backbone
    ):  # peft merges into the model it wraps; the sentence-transformer holds that one
        raise PipelineError("model.peft: peft returned another model from merge_and_unload: the merge is not in place.")
    for name, weight in expected.items():
        check_merged(name, backbone.get_submodule(name).weight, weight)
    log.info("LoRA adapter merged into %d layers: each equals W + scaling * B @ A", len(expected))


def lora_layers(module) -> list[tuple[str, object]]:
    """(name, layer) of every LoRA layer in the module (peft's ``LoraLayer``)."""
    from peft.tuners.lora import LoraLayer

    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, LoraLayer)]


def lora_weights(layer) -> tuple:
    """A LoRA layer's (A, B) weights, of its one adapter, detached copies."""
    (adapter,) = layer.active_adapters
    return layer.lora_A[adapter].weight.detach().clone(), layer.lora_B[adapter].weight.detach().clone()


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def merged_weight(layer):
    """What merging a LoRA layer must give, in float32: its base weight W + scaling * B @ A (transposed
    for a ``fan_in_fan_out`` layer), with peft's ``scaling`` of the adapter."""
    (adapter,) = layer.active_adapters
    a, b = (w.float() for w in lora_weights(layer))
    delta = (b @ a) * layer.scaling[adapter]
    return layer.get_base_layer().weight.detach().float() + (delta.T if layer.fan_in_fan_out else delta)


def check_merged(name: str, weight, expected) -> None:
    """The merged weight equals the expected one within a few roundings of its dtype (relative to its size)."""
    import torch

    limit = 8 * torch.finfo(weight.dtype).eps * float(expected.abs().max())
    difference = (
        float((weight.detach().float() - expected).abs().max()) if weight.shape == expected.shape else float("inf")
    )
    if not difference <= limit:
        raise PipelineError(
            f"model.peft: the merged weight of layer {name!r} is not W + scaling * B @ A (largest difference "
            f"{difference:.1e} > {limit:.1e}): the LoRA merge went wrong; the run's adapter/ artifact holds the "
            "trained adapter."
        )


def build_loss(loss: LossSpec, model, guide=None):
    """Instantiate the loss class named by ``loss._target_`` around the model (and guide), wrapped in
    ``MatryoshkaLoss`` when ``loss.matryoshka_dims`` is set."""
    from hydra.utils import instantiate

    factory = instantiate(loss.arguments)  # a loss that needs a guide has one: validate._check_guide
    built = factory(model=model, guide=guide) if loss.needs_guide else factory(model=model)
    if not loss.matryoshka_dims:
        return built
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    weights = list(loss.matryoshka_weights) if loss.matryoshka_weights else None
    return MatryoshkaLoss(model, built, list(loss.matryoshka_dims), weights)


def check_matryoshka_dims(dims: list[int] | None, model) -> None:
    """Matryoshka dimensions fit the loaded model (before training; pre-load checks: ``validate``)."""
    size = model.get_embedding_dimension()
    if dims and size and max(dims) > size:
        raise PipelineError(
            f"loss.matryoshka_dims={list(dims)}: {max(dims)} is larger than the model's embedding dimension "
            f"{size}: use dimensions up to {size}, e.g. loss.matryoshka_dims=[{size},{size // 2},{size // 4}]."
        )


def build_evaluators(
    specs: Sequence[EvaluatorSpec], needed: dict[str, tuple[str, ...]], splits: dict[str, Split], batch_size: int,
    corpora: dict[str, Split] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Every evaluator on every split it scores: ``{name}-{split}`` -> evaluator (built, not run).

    ``needed`` is split -> evaluator names (``JobSpec.splits_needed``); ``corpora`` holds the extra
    corpus read for an ``ir`` evaluator (``evaluators.NAME.corpus``), by evaluator name.
    """
    by_name = {spec.name: spec for spec in specs}
    built = {}
    for split, names in needed.items():
        for name in names if split in splits else []:  # an optional split the data does not have
            corpus = (corpora or {}).get(name)
            built[f"{name}-{split}"] = build_evaluator(by_name[name], split, splits[split], batch_size, corpus)
    return built


def build_evaluator(spec: EvaluatorSpec, split: str, data: Split, batch_size: int, corpus: Split | None = None):
    """The evaluator class named by ``evaluator._target_`` over one split, named ``{name}-{split}``.

    A retrieval class (``runtime.catalogue``: InformationRetrievalEvaluator) gets queries, corpus and
    relevance built from the rows (:func:`retrieval_inputs`); the others get the columns in order.
    """
    from hydra.utils import instantiate

    arguments = spec.arguments.copy()
    arguments.name = f"{spec.name}-{split}"
    factory = instantiate(arguments)
    if catalogue.evaluator(spec.target.rsplit(".", 1)[-1]).retrieval:
        label = spec.label if spec.label in data.dataset.column_names else None
        queries, documents, relevant = retrieval_inputs(data, list(spec.columns), label, corpus)
        return factory(queries=queries, corpus=documents, relevant_docs=relevant, batch_size=batch_size)
    columns = [data.dataset[c] for c in spec.columns]
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


def adjust_evaluators(
    evaluators: dict[str, Any],
    matryoshka_dims: list[int] | None = None,
    prompts: dict[str, list[str | None]] | None = None,
) -> dict[str, Any]:
    """The built evaluators (``{name}-{split}`` -> evaluator) with the training options in effect.

    ``prompts``: by evaluator name, one per text column, in the evaluator's column order (query / corpus for IR, both
    sides for STS, anchor / positive / negative for triplets); ``None`` leaves a column as it is.
    ``matryoshka_dims``: each split's evaluator also scores the embeddings truncated to each dimension,
    as ``{name}-{dim}`` (``sts-dev-256_spearman_cosine``), through a ``SequentialEvaluator`` whose
    primary score stays the full dimension's.
    """
    adjusted = {}
    for split, evaluator in evaluators.items():
        evaluator = _with_prompts(evaluator, (prompts or {}).get(split.rsplit("-", 1)[0], []))
        if matryoshka_dims:
            from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

            truncated = [_truncated(evaluator, dim) for dim in matryoshka_dims]
            evaluator = SequentialEvaluator([evaluator, *truncated], main_score_function=lambda scores: scores[0])
        adjusted[split] = evaluator
    return adjusted


def _with_prompts(evaluator, prompts: list[str | None]):
    """The evaluator with each text column's prompt: as its own prompt argument where it takes one, else
    prepended to each text, as ``model.encode(prompt=...)`` does (``runtime.catalogue``)."""
    if not any(prompts):
        return evaluator
    facts = catalogue.evaluator(type(evaluator).__name__)
    if facts.prompt_arguments:
        for attribute, prompt in zip(facts.prompt_arguments, prompts):
            if prompt:
                setattr(evaluator, attribute, prompt)
        return evaluator
    for attribute, prompt in zip(facts.text_arguments, prompts):
        if prompt:
            setattr(evaluator, attribute, [prompt + text for text in getattr(evaluator, attribute)])
    return evaluator


def _truncated(evaluator, dim: int):
    """A copy of ``evaluator`` scoring embeddings truncated to ``dim``, named ``{name}-{dim}``."""
    clone = copy.copy(evaluator)
    clone.truncate_dim = dim
    clone.name = f"{evaluator.name}-{dim}"
    if hasattr(evaluator, "csv_file"):
        clone.csv_file = evaluator.csv_file.replace(f"_{evaluator.name}", f"_{clone.name}", 1)
    return clone

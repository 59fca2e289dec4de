"""The build step: the model (and a GIST guide), the loss and the evaluators, from their configs.

Runs after every check that needs no model. Models load on the CPU; Hub ids resolve offline first
(``pipeline.runtime.offline``). Writes nothing to MLflow.
"""

from __future__ import annotations

import inspect
import tempfile

from omegaconf import DictConfig, OmegaConf

from pipeline import PipelineError
from pipeline.runtime.offline import resolve_model
from pipeline.stages.splits import Split


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


EVALUATOR_KEYS = ("columns", "primary_metric", "splits", "score_range")


def build_evaluator(evaluator_cfg: DictConfig, split: str, data: Split, batch_size: int):
    """The evaluator class named by ``evaluator._target_`` over one split, named ``{name}-{split}``."""
    from hydra.utils import instantiate

    options = {k: v for k, v in evaluator_cfg.items() if k not in EVALUATOR_KEYS}
    options["name"] = f"{evaluator_cfg.name}-{split}"
    factory = instantiate(OmegaConf.create(options))
    columns = [data.dataset[c] for c in evaluator_cfg.columns]
    return factory(*columns, batch_size=batch_size)

"""The LoRA merge (``pipeline.stages.build.merge_lora``) on the tiny model: peft's ``merge_and_unload``
leaves an ordinary model that embeds as the adapter model did; an adapter that is not the one trained,
or a merge whose weights are not W + scaling * B @ A, is refused naming the layer, however small the
adapter's effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import PipelineError
from pipeline.stages.build import add_lora, load_model, merge_lora
from tests.conftest import compose_config

TEXTS = ["a cat sat on the mat", "stocks fell sharply"]


def trained_lora_model(seed: int = 42, scale: float = 0.5):
    """The tiny model with a LoRA adapter whose weights moved (as after training), B drawn at ``scale``."""
    cfg = compose_config(["debug=smoke", "model.peft.r=4"])
    model = load_model(cfg.model, seed=seed)
    add_lora(model, cfg.model.peft)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: the adapter would change nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model


@pytest.mark.slow
def test_the_merged_model_embeds_as_the_adapter_model_and_saves_as_an_ordinary_model(tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = trained_lora_model()
    adapter_embeddings = model.encode(TEXTS)
    model.transformers_model.save_pretrained(str(tmp_path / "adapter"))
    merge_lora(model, tmp_path / "adapter")
    np.testing.assert_allclose(model.encode(TEXTS), adapter_embeddings, atol=1e-5)
    backbone = model.transformers_model
    assert not any(isinstance(m, BaseTunerLayer) for m in backbone.modules())
    assert not hasattr(backbone, "peft_config") and not backbone._hf_peft_config_loaded
    model.save_pretrained(str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()  # full weights, loads without peft
    from sentence_transformers import SentenceTransformer

    reloaded = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    np.testing.assert_allclose(reloaded.encode(TEXTS), adapter_embeddings, atol=1e-5)


def test_an_adapter_that_is_not_the_trained_one_is_refused(tmp_path):
    trained_lora_model(seed=7).transformers_model.save_pretrained(str(tmp_path / "other"))  # not this model's
    with pytest.raises(PipelineError, match=r"is not the one trained \(layer 'encoder\.layer\.0\."):
        merge_lora(trained_lora_model(), tmp_path / "other")


def test_a_small_adapter_merged_wrong_is_refused_naming_the_layer(tmp_path, monkeypatch):
    """An adapter whose effect on the embeddings is far below any embedding tolerance (B at 1e-5): the
    honest merge passes; a merge that leaves the base weights (peft's merge skipped) fails on its first layer."""
    from peft.tuners.lora.layer import Linear

    model = trained_lora_model(scale=1e-5)
    before = model.encode(TEXTS)
    model.transformers_model.save_pretrained(str(tmp_path / "adapter"))
    monkeypatch.setattr(Linear, "merge", lambda self, *args, **kwargs: None)  # the merged model is the base
    with pytest.raises(PipelineError, match=r"merged weight of layer 'encoder\.layer\.0\.attention\.self\.query'"):
        merge_lora(model, tmp_path / "adapter")
    assert float(np.abs(model.encode(TEXTS) - before).max()) < 1e-4  # what an embedding check would have accepted
    monkeypatch.undo()
    honest = trained_lora_model(scale=1e-5)
    merge_lora(honest, tmp_path / "adapter")
    np.testing.assert_allclose(honest.encode(TEXTS), before, atol=1e-6)

"""The LoRA merge (``pipeline.stages.build.merge_lora``) on the tiny model: peft's ``merge_and_unload``
leaves an ordinary model that embeds as the adapter model did, and a merge that would change the
embeddings is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import PipelineError
from pipeline.stages.build import add_lora, load_model, merge_lora
from tests.conftest import compose_config

TEXTS = ["a cat sat on the mat", "stocks fell sharply"]


def trained_lora_model(seed: int = 42):
    """The tiny model with a LoRA adapter whose weights moved (as after training)."""
    cfg = compose_config(["debug=smoke", "model.peft.r=4"])
    model = load_model(cfg.model, seed=seed)
    add_lora(model, cfg.model.peft)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: the adapter would change nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
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


def test_a_merge_that_changes_the_embeddings_is_refused(tmp_path):
    trained_lora_model(seed=7).transformers_model.save_pretrained(str(tmp_path / "other"))  # not this model's
    with pytest.raises(PipelineError, match="embeds differently from the adapter model"):
        merge_lora(trained_lora_model(), tmp_path / "other")

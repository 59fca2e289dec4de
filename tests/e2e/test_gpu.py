"""hardware=gpu on a real CUDA device (marked ``gpu``: skipped where ``torch.cuda.is_available()`` is False).

Load, train 20 steps in bf16 and in fp16, evaluate, with the model on ``cuda``; evaluation without
training on ``cuda`` too; packing's decision tagged; packed and padded embeddings agree on the GPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from pipeline.runtime import packing
from pipeline.stages import build
from pipeline.stages.build import load_model
from tests.conftest import compose_config

pytestmark = pytest.mark.gpu

GPU = ("hardware=gpu", "debug=smoke", "training.max_steps=20", "training.logging_steps=1")


@pytest.fixture
def loaded_models(monkeypatch) -> list:
    """Every model the job loads (the real ``load_model``, its results kept for the test to inspect)."""
    models = []
    real = build.load_model

    def keep(*args, **kwargs):
        models.append(real(*args, **kwargs))
        return models[-1]

    monkeypatch.setattr(build, "load_model", keep)
    return models


def parameter_devices(model) -> set[str]:
    return {parameter.device.type for parameter in model.parameters()}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_20_steps_and_evaluate_on_cuda(precision, run_job, mlflow_client, loaded_models):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = run_job(*GPU, f"training.{precision}=true", f"hardware.precision={precision}")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["precision.effective"] == precision
    assert run.data.tags["packing"].startswith(("on:", "off:"))
    assert len(loaded_models) == 1 and parameter_devices(loaded_models[0]) == {"cuda"}  # trained on the GPU
    losses = [m.value for m in mlflow_client.get_metric_history(result.run_id, "loss")]
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result.metrics["sts-test_spearman_cosine"])
    assert run.data.tags.get("guard.check") is None  # fp16's GradScaler skips are not divergence


def test_evaluate_only_runs_on_cuda(run_job, mlflow_client, loaded_models):
    result = run_job("hardware=gpu", "debug=smoke", "stages=[load,evaluate]")
    assert mlflow_client.get_run(result.run_id).info.status == "FINISHED"
    assert len(loaded_models) == 1 and parameter_devices(loaded_models[0]) == {"cuda"}  # no trainer: the job moved it
    assert math.isfinite(result.metrics["sts-test_spearman_cosine"])


def test_packed_and_padded_embeddings_agree_on_cuda():
    model = load_model(compose_config(["model=tiny"]).model, seed=42).to("cuda").eval()
    sentences = ["A man plays a guitar.", "Two dogs run across a wide green field in the morning sun.", "Hi."] * 8
    padded = model.encode(sentences, batch_size=12, convert_to_tensor=True)
    packer = packing.enable(model, OmegaConf.create({"packing": "true", "packing_row_length": 32}))
    packed = model.encode(sentences, batch_size=12, convert_to_tensor=True)
    packing.disable(model)
    assert packer is not None and packed.device.type == "cuda"
    assert torch.allclose(packed, padded, atol=1e-4), float((packed - padded).abs().max())

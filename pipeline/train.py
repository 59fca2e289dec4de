"""The train stage: SentenceTransformerTrainer over the loaded model, loss and data.

Writes to MLflow (through the callbacks it is given, from ``pipeline.tracking``): training loss,
learning rate and grad norm every ``training.logging_steps``, and the dev evaluator's metrics
(``eval_`` prefix) every ``training.eval_steps``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    global_step: int
    training_loss: float
    runtime_s: float
    samples_per_second: float


def train(
    model, loss, train_dataset, args, dev_evaluator=None, callbacks=(), eval_dataset=None, resume_from_checkpoint: str | None = None
) -> TrainResult:
    """Train ``model`` in place with ``loss`` on ``train_dataset`` under ``args``.

    ``train_dataset`` is a ``datasets.Dataset`` or a ``DatasetDict`` of named sets (batches then
    come from one set at a time, by ``args.multi_dataset_batch_sampler``). ``dev_evaluator`` runs
    every ``args.eval_steps``; ``eval_dataset`` (same layout as the train data) adds ``eval_loss``.
    ``resume_from_checkpoint`` continues from a ``checkpoint-N`` folder: weights, optimizer, scheduler,
    RNG states and the position in the data are restored by the trainer.
    """
    from sentence_transformers import SentenceTransformerTrainer

    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=loss,
        evaluator=dev_evaluator,
        callbacks=list(callbacks),
    )
    output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = output.metrics
    return TrainResult(
        global_step=output.global_step,
        training_loss=float(output.training_loss),
        runtime_s=float(metrics.get("train_runtime", 0.0)),
        samples_per_second=float(metrics.get("train_samples_per_second", 0.0)),
    )

"""Cost of the divergence/collapse guard next to a training step (CPU).

    .venv/bin/python -m benchmarks.bench_guard [model=minilm] [batch=32] [repeats=20]

The per-log checks are a few float comparisons; the one measurable part is the collapse probe
(encoding 4 fixed sentences), run every ``guard.collapse_every`` steps. Prints the probe's time, a
training step's time (forward + backward + optimizer step, MNRL) and the overhead at the default
``collapse_every``.
"""

from __future__ import annotations

import sys
import time

from pipeline.runtime.callbacks import TrainingGuard
from pipeline.runtime.guard import PROBE_SENTENCES
from pipeline.stages.build import load_model
from pipeline.stages.spec import read_guard
from tests.conftest import compose_config


def main() -> None:
    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    cfg = compose_config([f"model={options.get('model', 'minilm')}"])
    batch, repeats = int(options.get("batch", 32)), int(options.get("repeats", 20))
    model = load_model(cfg.model, seed=42)
    guard = TrainingGuard(read_guard(cfg.guard), model, chance=None)

    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from torch.optim import AdamW
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    guard._check_collapse(state, control)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        guard._check_collapse(state, control)
    probe = (time.perf_counter() - started) / repeats

    loss = MultipleNegativesRankingLoss(model)
    optimizer = AdamW(model.parameters(), lr=1e-5)
    texts = [f"{PROBE_SENTENCES[i % 4]} number {i}" for i in range(batch)]
    features = [model.tokenize(texts), model.tokenize(list(reversed(texts)))]
    model.train()
    step_times = []
    for _ in range(max(3, repeats // 4)):
        started = time.perf_counter()
        value = loss(features, None)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        step_times.append(time.perf_counter() - started)
    step = sorted(step_times)[len(step_times) // 2]
    every = int(cfg.guard.collapse_every)
    print(
        f"model={cfg.model.name_or_path} batch={batch}: collapse probe {probe * 1000:.1f} ms, "
        f"train step {step * 1000:.0f} ms (median); overhead at collapse_every={every}: "
        f"{probe / (every * step) * 100:.3f}% of training time"
    )


if __name__ == "__main__":
    main()

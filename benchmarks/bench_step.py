"""One default training step with and without each of the step's speed settings, interleaved step by step.

The step of ``bench_floor`` (all-MiniLM-L6-v2, MNRL, batch 32 STSb pairs, packed rows, fused AdamW,
gradient clipping) as the trainer runs it: Accelerate's bf16 autocast around each forward (one for
both text columns by default), the loss outside it. Variants, each the default ``hardware`` profile with one setting
changed (``default`` is the profile as it ships):

- ``cast_per_forward``: ``hardware.cast_weights_once=false`` (the weights cast to bf16 per forward);
- ``sdpa_attention``: ``hardware.training_attention=null`` (torch's sdpa, which with dropout takes its
  fp32 math path on the CPU);
- ``torch_dropout``: ``hardware.dropout_masks=null`` (torch's ``bernoulli_`` masks, not 16-bit slices);
- ``attention_torch_masks``: the default profile, but the attention probabilities' dropout draws torch's
  masks (BERT's own eager attention, not ``pipeline.runtime.dropout.attention``), the modules' masks bits;
- ``apart_forwards``: ``hardware.merged_forward=false`` (each text column in a forward of its own, as the
  library's MNRL does, instead of both in one);
- ``torch_clipping``: the default profile, gradients clipped by torch's ``clip_grad_norm_`` (which multiplies
  every gradient by 1.0 when nothing is clipped), not ``pipeline.runtime.clipping`` (the trainer's on a CPU);
- ``compiled`` (with ``--compile``): the default profile with each encoder layer run through
  ``torch.compile`` (inductor; ``--dynamic``: torch's choice, a static graph first and a dynamic one once
  a second shape is seen, or ``true``/``false``). The warm-up (every batch once per variant) is timed
  apart: for ``compiled`` it is the compile, from inductor's on-disk caches when ``TORCHINDUCTOR_CACHE_DIR``
  holds a previous run's graphs;
- ``fused_tails`` (with ``--fused-tails``): the default profile with each layer's two "dropout, add the
  residual, layer norm" tails (``BertSelfOutput``, ``BertOutput``, after their dense product) run as one
  ``torch.compile`` function: inductor fuses the three into one kernel forward and one backward, its
  dropout mask drawn inside the kernel (``--dynamic`` as for ``compiled``);
- ``no_pooler`` (with ``--no-pooler``): the default profile with BERT's pooler (a dense layer and tanh
  over each packed row's first token, which sentence-transformers' own pooling never reads) left out
  of the forward (``auto_model.pooler = None`` during the step).

Every round runs each batch once per variant, in a rotating order, so that load from other processes
hits all alike; reported: median step milliseconds per variant and each variant over ``default``.
Wall-clock timing only: results (Spearman) need the full runs of ``bench_cpu --variant``.
Writes ``benchmarks/results/bench_step-<date>-<cpu kind>.json`` and ``.md``.

    .venv/bin/python benchmarks/bench_step.py --data ../shared/data/stsb --rounds 5
    .venv/bin/python benchmarks/bench_step.py --data ../shared/data/stsb --threads 1   # on a loaded machine
    TORCHINDUCTOR_CACHE_DIR=/tmp/inductor .venv/bin/python benchmarks/bench_step.py --threads 1 \
        --compile --only default compiled      # twice: a cold compile, then the warm on-disk cache
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_cpu import loadavg, machine, write_results  # noqa: E402
from benchmarks.bench_floor import setup, uptime  # noqa: E402

VARIANTS = {
    "default": {},
    "cast_per_forward": {"cast_weights_once": False},
    "sdpa_attention": {"training_attention": None},
    "torch_dropout": {"dropout_masks": None},
    "attention_torch_masks": {},
    "apart_forwards": {"merged_forward": False},
    "torch_clipping": {},
}


def trainer_like(s) -> None:
    """Accelerate's bf16 wrapping of ``model.forward``, as the trainer prepares the model."""
    from accelerate import Accelerator

    Accelerator(mixed_precision="bf16" if s.precision == "bf16" else "no", cpu=True).prepare_model(s.model)


def compiled_layers(s, dynamic: bool | None):
    """The model's encoder layers as they are and each through ``torch.compile`` (same parameters)."""
    import torch

    encoder = s.model[0].auto_model.encoder
    plain = encoder.layer
    return {False: plain, True: torch.nn.ModuleList([torch.compile(layer, dynamic=dynamic) for layer in plain])}


def fused_tails(s, dynamic: bool | None) -> list[tuple]:
    """(module, its forward with the dropout-add-layer-norm tail compiled) for each layer's two output
    blocks: set as the module's ``forward`` for the variant, removed again for the others."""
    import torch
    import torch.nn.functional as F

    def tail(hidden, residual, weight, bias, p: float, eps: float, training: bool):
        return F.layer_norm(F.dropout(hidden, p, training) + residual, (hidden.shape[-1],), weight, bias, eps)

    fused = torch.compile(tail, dynamic=dynamic)

    def forward(block):
        def run(hidden_states, input_tensor):
            norm = block.LayerNorm
            return fused(block.dense(hidden_states), input_tensor, norm.weight, norm.bias, block.dropout.p, norm.eps,
                         block.training)  # fmt: skip

        return run

    layers = s.model[0].auto_model.encoder.layer
    return [(block, forward(block)) for layer in layers for block in (layer.attention.output, layer.output)]


def step(s, batch, machine, torch_attention_masks: bool = False, torch_clipping: bool = False) -> tuple[float, float]:
    """One step under ``profile``'s loss region and training attention: wall and CPU seconds (the step
    alone; CPU time is this process's, all threads, so that with ``--threads 1`` it is the step's own
    work, whatever other processes take from the machine)."""
    import torch

    from pipeline.runtime import clipping, hardware
    from pipeline.runtime.dropout import masks

    clip = torch.nn.utils.clip_grad_norm_ if torch_clipping else clipping.clip_grad_norm
    region = hardware.loss_region(machine) or contextlib.nullcontext
    with hardware.training_attention(s.model, machine), masks(s.model, machine.bits_dropout):
        if torch_attention_masks:  # BERT's own eager attention (masks gives it back on leaving)
            s.model[0].auto_model.set_attn_implementation("eager")
        started, cpu = time.perf_counter(), time.process_time()
        with region():
            loss = (s.loss if machine.merged_forward else s.apart_loss)([dict(f) for f in batch], None)
        loss.backward()
        clip(list(s.model.parameters()), 1.0)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, time.process_time() - cpu


def run(args, data: Path) -> dict:
    from omegaconf import OmegaConf

    from pipeline.runtime.hardware import resolve_machine

    report = {
        "command": " ".join(["benchmarks/bench_step.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "uptime_before": uptime(),
        "load_before": loadavg(),
        "rounds": args.rounds,
    }
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    s = setup(data, args.quick, args.batches)
    trainer_like(s)
    from pipeline.stages.settings import declared_defaults

    base = OmegaConf.merge(declared_defaults()["hardware"], OmegaConf.load(REPO / "conf" / "hardware" / "cpu.yaml"))
    variants = {
        **VARIANTS,
        **({"compiled": {}} if args.compile else {}),
        **({"no_pooler": {}} if args.no_pooler else {}),
        **({"fused_tails": {}} if args.fused_tails else {}),
    }
    training = OmegaConf.load(REPO / "conf" / "training" / "default.yaml")
    profiles = {
        name: resolve_machine(OmegaConf.merge(base, variants[name]), training) for name in args.only or variants
    }
    layers = compiled_layers(s, {"auto": None, "true": True, "false": False}[args.dynamic])
    tails = fused_tails(s, {"auto": None, "true": True, "false": False}[args.dynamic]) if args.fused_tails else []
    auto_model = s.model[0].auto_model
    pooler = auto_model.pooler

    def timed(name, batch):
        auto_model.encoder.layer = layers[name == "compiled"]
        auto_model.pooler = None if name == "no_pooler" else pooler
        for block, forward in tails:
            if name == "fused_tails":
                block.forward = forward
            else:
                block.__dict__.pop("forward", None)
        return step(s, batch, profiles[name], name == "attention_torch_masks", name == "torch_clipping")

    warmup: dict[str, list[float]] = {}
    for name in profiles:  # warm-up: oneDNN primitives, the optimizer's state, each attention path, compiling
        warmup[name] = [timed(name, batch)[0] for batch in s.batches]
    times: dict[str, list[float]] = {name: [] for name in profiles}
    cpu: dict[str, list[float]] = {name: [] for name in profiles}
    names = list(profiles)
    for round_index in range(args.rounds):
        for index, batch in enumerate(s.batches):
            shift = (round_index + index) % len(names)
            for name in names[shift:] + names[:shift]:
                wall, used = timed(name, batch)
                times[name].append(wall)
                cpu[name].append(used)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    cpu_medians = {name: statistics.median(t) * 1e3 for name, t in cpu.items()}
    report.update(
        precision=s.precision,
        config={
            **s.config,
            **{k: str(base[k]) for k in ("cast_weights_once", "training_attention", "dropout_masks", "merged_forward")},
        },
        step_s=times,
        warmup_s=warmup,
        compile_dynamic=args.dynamic if args.compile or args.fused_tails else None,
        threads=torch.get_num_threads(),
        step_ms=medians,
        over_default={name: medians[name] / medians[names[0]] for name in names},
        step_cpu_s=cpu,
        step_cpu_ms=cpu_medians,
        cpu_over_default={name: cpu_medians[name] / cpu_medians[names[0]] for name in names},
        load_after=loadavg(),
        uptime_after=uptime(),
    )
    return report


def markdown(report: dict) -> str:
    machine_ = report["machine"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {machine_['cpu']}, flags {' '.join(machine_['flags'])}, torch {machine_['torch']}; "
        f"{report['precision']}  ",
        f"Load before: {report['load_before']} ({report['uptime_before']}), after: {report['load_after']} "
        f"({report['uptime_after']}); rounds: {report['rounds']}; torch threads: {report.get('threads')}",
        "",
        "| variant | step wall ms (median) | / first | step CPU ms (median) | / first | warm-up s (every batch once) |",
        "|---|---|---|---|---|---|",
    ]
    for name, ms in report["step_ms"].items():
        cpu_ms, cpu_ratio = report["step_cpu_ms"][name], report["cpu_over_default"][name]
        warm = sum(report.get("warmup_s", {}).get(name, [float("nan")]))
        lines.append(
            f"| {name} | {ms:.1f} | {report['over_default'][name]:.3f} | {cpu_ms:.1f} | {cpu_ratio:.3f} | {warm:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/stsb", help="STS Benchmark folder (train.csv)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 pairs (seeded draw)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the batches, every variant each")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1: CPU time is the step's work)")
    parser.add_argument("--compile", action="store_true", help="add the variant 'compiled' (torch.compile per layer)")
    parser.add_argument("--dynamic", choices=("auto", "true", "false"), default="auto", help="torch.compile's dynamic")
    parser.add_argument("--no-pooler", action="store_true", help="add the variant 'no_pooler' (BERT's pooler skipped)")
    parser.add_argument(
        "--fused-tails", action="store_true", help="add 'fused_tails' (dropout+add+layer norm compiled)"
    )
    parser.add_argument("--only", nargs="+", default=None, help="these variants only (the first is the reference)")
    parser.add_argument("--quick", action="store_true", help="model=tiny, 1 batch, 1 round: a check of the benchmark")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the .json and .md")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds = 1, 1
    data = Path(args.data) if Path(args.data).is_absolute() else (REPO / args.data).resolve()
    if not (data / "train.csv").is_file():
        raise SystemExit(f"--data {args.data}: no train.csv there; point it at the STS Benchmark folder.")
    report = run(args, data)
    stem = f"bench_step-{time.strftime('%Y%m%d-%H%M')}-{report['machine']['kind']}" + ("-quick" if args.quick else "")
    write_results(report, Path(args.out), stem, markdown)


if __name__ == "__main__":
    main()

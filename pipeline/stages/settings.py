"""Every setting the pipeline owns, declared once: its type, allowed values, range, default and help.

One dataclass per config node, one field per key: ``setting("help", default=1, min=1)``, a
``field(metadata=...)`` as in transformers' ``TrainingArguments``. A closed choice is an
:class:`~enum.Enum`; a range is ``min``/``max`` (inclusive) or ``above``/``below`` (exclusive) in the
field's metadata; ``descending`` asks a list for strictly falling values, ``nonempty`` for at least one.
Cross-field rules within a node are its ``rules`` method, beside its fields (:func:`check_values` runs
them; ``stages.validate`` holds the rules across nodes). A new setting is one field here, and its use.

What derives from it: the defaults Hydra composes before every config file (:func:`declared_defaults`,
registered as ``pipeline_defaults`` by ``hydra_plugins/pipeline_settings``: the YAML files under ``conf/``
hold only group options, profiles and recipes, i.e. what differs); the key lists of the closed nodes
(``pipeline.stages.schema``); the value checks (:func:`check_values`, one message per key:
``hardware.precision='fp61': one of auto, fp32, bf16, fp16; ...``); the reference page
``docs/config.md`` (``python -m pipeline.schema_docs``, with each key's value in the default job).

The defaults are composed as a plain config node and the ranges are metadata read by one generic
checker, rather than the dataclasses being merged as OmegaConf structured configs: the job keeps
reading the composed ``DictConfig``, which MLflow logs as params and every cache key reads, unchanged
(a structured merge would turn choices into enum members and convert ``"3"`` to ``3`` instead of
refusing it); OmegaConf runs no ``__post_init__`` for structured configs either; and one checker words
every refusal the same way, in one line naming the key, the value and what it allows. Library nodes
(``training``, a ``_target_``'s own arguments) are the library's: only the keys the pipeline reads
beside them are declared here. Writes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline import PipelineError
from pipeline.stages.leakage import Mode as LeakageMode
from pipeline.stages.splits import LABEL_COLUMNS

UNSET = object()  # a setting without a declared default: a group option sets it (a profile, a recipe)


def setting(help: str = "", default: Any = UNSET, **rules: Any) -> Any:
    """A declared key: a one-line help text, its default and its range (``min``, ``max``, ``above``,
    ``below``, ``descending``, ``nonempty``, ``unit``; ``library``: a node whose other keys a library
    checks). The default is composed before every config file (:func:`declared_defaults`); a key without
    one is set by the option of its group (``conf/hardware/cpu.yaml``, ``conf/model/minilm.yaml``...).
    ``logged_before``: the value jobs ran with before the key existed, where that is not the default (a run
    logged without the key replays with it: ``pipeline.logged_config.fill_missing``)."""
    declared = {} if default is UNSET else {"default": default}
    return field(default=None, metadata={"help": help, **rules, **declared})


def node(cls: type, help: str = "", **rules: Any) -> Any:
    """A declared sub-node (a dataclass of its own)."""
    return field(default_factory=cls, metadata={"help": help, **rules})


class Stage(enum.Enum):
    load = "load"
    mine = "mine"
    train = "train"
    evaluate = "evaluate"


class MineCorpus(enum.Enum):
    split = "split"
    positives = "positives"


class SamplingStrategy(enum.Enum):
    top = "top"
    random = "random"


class Accelerator(enum.Enum):
    cpu = "cpu"
    cuda = "cuda"


class Precision(enum.Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Switch(enum.Enum):
    auto = "auto"
    true = "true"
    false = "false"


class Backend(enum.Enum):  # torch.distributed's backends the trainer's ddp_backend takes
    gloo = "gloo"
    nccl = "nccl"
    mpi = "mpi"
    ccl = "ccl"
    hccl = "hccl"


class TrainingAttention(enum.Enum):  # the attention implementation BERT-style models train with on a CPU
    eager = "eager"


class DropoutMasks(enum.Enum):  # how training draws dropout masks on a CPU (pipeline/runtime/dropout.py)
    bits = "bits"


class EvalStrategy(enum.Enum):  # transformers' IntervalStrategy
    no = "no"
    steps = "steps"
    epoch = "epoch"


class Negatives(enum.Enum):
    in_batch = "in_batch"
    labelled = "labelled"


@dataclass
class Mine:
    """``mine``: the mine stage (``stages=[load,mine,train,evaluate]``): (anchor, positive) pairs become
    (anchor, positive, negative) rows through ``sentence_transformers.util.mine_hard_negatives``."""

    corpus: MineCorpus = setting(
        default="split",
        help="candidates: split = every text of the train file's positive column; positives = the pairs' own",
    )
    range_min: int = setting(
        default=0, help="skip the range_min most similar candidates (likely unlabelled positives)", min=0
    )
    range_max: int | None = setting(
        default=20, help="look no further than the range_max most similar (null: all)", min=1
    )
    relative_margin: float | None = setting(
        default=0.05,
        help="a negative scores at most (1 - this) of the positive's similarity (fewer false negatives)",
        min=0,
    )
    absolute_margin: float | None = setting(
        default=None, help="or: a negative scores at least this much below the positive", min=0
    )
    num_negatives: int = setting(
        default=1, help="negatives per pair (one (anchor, positive, negative) row each)", min=1
    )
    sampling_strategy: SamplingStrategy = setting(
        default="top", help="top: the hardest that pass the margins; random: any of them"
    )
    use_faiss: bool = setting(default=False, help="search with faiss (not installed: exact search)")
    batch_size: int = setting(default=32, help="encoding batch", min=1)
    cache_dir: str = setting(
        default="${repo_root:}/outputs/mined",
        help="one folder per key (train rows, candidates, miner, options, prompts): reruns reuse it",
    )
    cache_max_age_days: float | None = setting(
        default=None,
        help="mine a set again once it is this old (0: every time; null: keep it until cache_dir is cleared)",
        min=0,
        unit="days",
    )

    @staticmethod
    def rules(mine: DictConfig, path: str) -> None:
        low, high, wanted = mine.range_min, mine.range_max, mine.num_negatives
        if high is not None and high - low < wanted:
            raise PipelineError(
                f"{path}.range_max={high} with {path}.range_min={low} leaves {high - low} candidates, fewer than "
                f"{path}.num_negatives={wanted}: raise range_max or lower num_negatives (>= 1)."
            )


@dataclass
class Peft:
    """``model.peft``: a LoRA adapter (peft); only its weights train. The run logs the adapter (artifacts
    ``adapter/``) and, as its model, the base with the adapter merged in."""

    r: int | None = setting(default=None, help="LoRA rank, e.g. 8 (null: off, full fine-tuning)", min=1)
    alpha: float = setting(default=16, help="scaling: alpha / r", above=0)
    dropout: float = setting(default=0.0, help="dropout on the adapter's input", min=0, below=1)
    target_modules: list[str] | None = setting(
        default=None,
        help="names of the linear modules to adapt, e.g. [query,value] (null: peft's default for the architecture)",
    )


@dataclass
class Model:
    """``model`` (and ``guide``, ``miner``, placed as models): the model being trained, loaded or built."""

    name_or_path: str = setting("Hub id or local folder of a sentence-transformers model")
    architecture: Any = setting("build from this transformers config instead of loading weights (null: load)")
    tokenizer: str | None = setting("tokenizer when building from architecture (null: name_or_path's)")
    max_seq_length: int | None = setting(
        "longest input; longer inputs are truncated (null: the model's own)", min=1, unit="tokens"
    )
    pooling: str = setting("pooling over token embeddings when building from architecture: mean, cls, max, ...")
    normalize: bool = setting("add a Normalize module when building from architecture (unit-length embeddings)")
    trust_remote_code: bool = setting("run custom modelling code shipped with a Hub model (e.g. NomicBert)")
    peft: Peft = node(Peft, "a LoRA adapter (peft): only its weights train")


@dataclass
class Splits:
    """``data.splits``: the file or Hub split name of each split."""

    train: str | None = setting("the train split")
    dev: str | None = setting("the dev split (evaluation during training, optimized_metric)")
    test: str | None = setting("the test split (the evaluate stage)")


@dataclass
class DataSet:
    """``data`` (and ``eval_data``, each of ``data.train_sets``): where rows come from and which columns train."""

    name: str = setting("short name of the data (the job's name, metric lineage)")
    path: str | None = setting("Hugging Face Hub dataset id (null: local_dir)")
    subset: str | None = setting("the Hub dataset's subset")
    local_dir: str | None = setting("folder of split files (csv, jsonl, parquet), used before path")
    optional_splits: list[str] | None = setting("splits scored only when local_dir has them")
    splits: Splits = node(Splits, "split -> file or Hub split name")
    columns: Any = setting("our column -> the data's column (renames)")
    prompts: Any = setting(
        default=None,
        help="train column -> prompt prepended to its texts, e.g. {anchor: 'query: ', positive: 'document: '}; training "
        "passes them as the prompts argument, the evaluators' text columns get the prompt of the train column in the "
        "same position (STS: both sides; triplets; IR: query / corpus) and the logged model stores them: "
        "encode(..., prompt_name='anchor') (null: none)",
    )
    train_columns: list[str] = setting("the columns training reads, in the loss's order")
    max_train_rows: int | None = setting("keep the first N train rows (null: all)", min=1)
    corpus: str | None = setting("a larger corpus for retrieval evaluation: a file with text (and id) columns")
    negatives: Negatives | None = setting("in_batch: negatives are the batch's other rows; labelled: a column")
    train_transform: Any = setting("a function turning the loaded train rows into train_columns (_target_)")


@dataclass
class EvalData(DataSet):
    """``eval_data`` (and ``data``): a data set, or several train sets by name."""

    train_sets: dict[str, DataSet] | None = setting("several train sets by name, each a data set's keys")


@dataclass
class Data(EvalData):
    """``data``: the training data, its dev/test splits and the audit of evaluation rows against train rows."""

    leakage: LeakageMode = setting(
        default="warn",
        help="leakage audit before any model loads, each evaluation split against the train rows (texts normalised: NFKC, "
        "case, punctuation, whitespace; exact and near-duplicate rows and shared texts; metrics leakage/*, the rows "
        "in the run's leakage/<split>.parquet): warn = one warning line; drop = train without the train rows that "
        "duplicate an evaluation row (exact or near); fail = refuse the job (exit 2, no run); off",
    )
    leakage_threshold: float = setting(
        default=0.6,
        help="near duplicate: Jaccard of the rows' shingles (words and word pairs) at least this "
        "(0.6: one word changed in a pair of 7 or more words still counts; 1: exact only; docs/leakage.md)",
        above=0,
        max=1,
    )

    @staticmethod
    def rules(data: DictConfig, path: str) -> None:
        """``prompts``: a non-empty prompt per text column that a train set trains on."""
        prompts = data.get("prompts")
        if prompts is None:
            return
        sets = list((data.get("train_sets") or {}).values()) or [data]
        columns = (str(c) for each in sets for c in each.get("train_columns") or [])
        texts = list(dict.fromkeys(c for c in columns if c not in LABEL_COLUMNS))
        if not isinstance(prompts, DictConfig):
            raise PipelineError(
                f"{path}.prompts={prompts!r}: map train columns to prompts, e.g. {path}.prompts={{{(texts or ['anchor'])[0]}:'query: '}}."
            )
        for column, prompt in prompts.items():
            if column not in texts:
                raise PipelineError(
                    f"{path}.prompts.{column}: {column!r} is not a text column data {data.name!r} trains on; its "
                    f"columns are {texts}: key the prompt by one of them."
                )
            if not isinstance(prompt, str) or not prompt:
                raise PipelineError(
                    f"{path}.prompts.{column}={prompt!r}: a prompt is a non-empty string, e.g. 'query: '."
                )


@dataclass
class LossOptions:
    """``loss``: options every loss takes; the loss group fills in the class (``_target_``) and its arguments."""

    matryoshka_dims: list[int] | None = setting(
        default=None,
        help="wrap the loss in MatryoshkaLoss over these dimensions, largest first and at most the model's, e.g. "
        "[384,256,128,64]; the evaluators then report each (sts-dev-256_spearman_cosine) (null: off)",
        min=1,
        descending=True,
        nonempty=True,
    )
    matryoshka_weights: list[float] | None = setting(
        default=None, help="one weight per dimension (null: 1 each)", above=0
    )

    @staticmethod
    def rules(loss: Any, path: str) -> None:
        dims, weights = loss.get("matryoshka_dims"), loss.get("matryoshka_weights")
        if dims is not None and weights is not None and len(weights) != len(dims):  # without dims: unused
            raise PipelineError(
                f"{path}.matryoshka_weights={list(weights)}: give one positive weight per dimension of "
                f"{path}.matryoshka_dims={None if dims is None else list(dims)} (or null: 1 each)."
            )


@dataclass
class Evaluator:
    """``evaluators.NAME`` (``conf/evaluators/``): the pipeline's settings for one evaluator, outside; the
    class and its own arguments inside ``evaluator`` (checked against the class's signature)."""

    name: str = setting("metric prefix: {name}-{split}_{metric}")
    columns: list[str] = setting("columns read, in the evaluator's argument order")
    splits: list[str] = setting("splits scored by the evaluate stage")
    primary_metric: str | None = setting(
        "the metric that ranks runs: {name}-{split}_{primary_metric} (null: the class's own primary metric)"
    )
    score_range: list[float] | None = setting("scores must lie in this range (null: any finite number)")
    label: str | None = setting("retrieval: the relevance column (1 relevant, 0 not), when the split has it")
    corpus: str | None = setting(
        "retrieval: a file with a text (and id) column: a larger corpus (null: the evaluation data's corpus)"
    )
    evaluator: Any = setting(
        "the class (_target_) and its own arguments, e.g. main_similarity: dot (texts, scores and name are "
        "filled in per split)",
        library="target",
    )


@dataclass
class Hardware:
    """``hardware``: where and how a job runs. It changes the speed; the numbers only through rounding (the
    precision, the shapes of the products) and the ranks (each takes a batch: the global batch grows with
    them). Every profile (``conf/hardware/``) starts from the defaults declared here; ``cpu.yaml`` and
    ``gpu.yaml`` set the rest."""

    accelerator: Accelerator = setting("cpu, or cuda: one GPU per process")
    num_processes: int = setting("processes (ranks); more than 1 starts them through accelerate launch", min=1)
    precision: Precision = setting(
        "auto: bf16 where the CPU/GPU has native bf16, fp16 on a GPU when the recipe asks for it, else fp32; "
        "the others force one",
    )
    num_threads: int | None = setting("threads for torch's intra-op parallelism (null: torch's default)", min=1)
    packing: Switch = setting(
        "padding-free batches: auto = on where a packed-vs-padded check agrees to fp32 noise; true = the same, "
        "warning when it cannot; false = pad to the longest",
    )
    packing_row_length: int = setting(
        "tokens per packed row, at least (a row is as wide as the batch's longest sentence when longer)",
        min=1,
        unit="tokens",
    )
    eval_batch_size: int | None = setting(
        "sentences per batch when the evaluators encode (null: training.per_device_eval_batch_size)", min=1
    )
    tf32: bool = setting(default=False, help="TF32 matmuls on CUDA (gpu.yaml: true)")
    num_machines: int = setting(default=1, help="machines taking part (multi_node.yaml)", min=1)
    machine_rank: int = setting(default=0, help="this machine's index, 0 .. num_machines - 1", min=0)
    main_process_ip: str | None = setting(default="127.0.0.1", help="machine 0's address, reachable from every machine")
    main_process_port: int | None = setting(
        default=None, help="machine 0's rendezvous port (null: a free one, on one machine)", min=1, max=65535
    )
    backend: Backend | None = setting(default=None, help="collectives between ranks (null: gloo on CPU, nccl on CUDA)")
    timeout_s: float = setting(
        default=300, help="seconds a collective may wait for a silent rank", above=0, unit="seconds"
    )
    join_timeout_s: float = setting(
        default=300, help="seconds machines wait for each other to join", above=0, unit="seconds"
    )
    cast_weights_once: bool = setting(
        default=True,
        help="bf16/fp16 training: true = one copy of the weights in that precision per step, shared by the loss's "
        "forwards (one per text column): same forward values, the columns' weight gradients summed in bf16 "
        "(BENCHMARKS.md, issue 31); false = one per forward (the trainer's own casting)",
    )
    training_attention: TrainingAttention | None = setting(
        default="eager",
        help="eager: BERT-style models with attention dropout train with eager attention (bf16 products) on a CPU, "
        "where torch's sdpa with dropout runs unfused in fp32 (evaluation keeps sdpa); same STSb Spearman, 6.5% less "
        "CPU a step (BENCHMARKS.md, issue 31); null: the model's own attention throughout",
    )
    dropout_masks: DropoutMasks | None = setting(
        default="bits",
        logged_before=None,
        help="bits: training on a CPU, the model's nn.Dropout modules (BERT: hidden states, embeddings) and, with "
        "eager attention of BERT's code, the attention probabilities draw their masks from 16-bit slices of the "
        "generator's 64-bit words (p rounded to a multiple of 1/65536), 3x less time than torch's bernoulli_ (one "
        "double per element, one thread; BENCHMARKS.md, issue 31); null: torch's own",
    )
    merged_forward: bool = setting(
        default=True,
        logged_before=False,
        help="true: on a CPU with packed rows, a loss that embeds each text column in a forward of its own (MNRL, "
        "CoSENT, AnglE, CosineSimilarity, Triplet) embeds them all in one (sentence-transformers' embed_columns with "
        "separate_first=False): 0.85-0.89x the step, other dropout draws (BENCHMARKS.md, issue 31); false: the library's own",
    )

    @staticmethod
    def rules(hardware: DictConfig, path: str) -> None:
        processes, machines, machine = hardware.num_processes, hardware.num_machines, hardware.machine_rank
        if machine >= machines:
            raise PipelineError(
                f"{path}.machine_rank={machine} with {path}.num_machines={machines}: set it to this machine's index, "
                f"0 .. {machines - 1}."
            )
        if machines > 1 and not hardware.main_process_ip:
            raise PipelineError(
                f"{path}.num_machines={machines} needs {path}.main_process_ip: set it to machine 0's "
                f"address on every machine (and {path}.machine_rank to each machine's index)."
            )
        if processes % machines:
            raise PipelineError(
                f"{path}.num_processes={processes} is not divisible by {path}.num_machines={machines}: set "
                "num_processes to the processes per machine times the machines."
            )


@dataclass
class Training:
    """``training``: sentence-transformers' ``SentenceTransformerTrainingArguments``, names unchanged
    (``conf/training/``); the library checks its own fields (``stages.train``). Declared here: the ones the
    pipeline reads, and the values the library would take without complaint although nothing could train."""

    learning_rate: float = setting("peak learning rate (after warmup)", above=0)
    per_device_train_batch_size: int = setting(
        "rows per training batch and process; MNRL: in-batch negatives per anchor = this - 1", min=1
    )
    per_device_eval_batch_size: int = setting("rows per batch when the loss is scored on dev (eval_loss)", min=1)
    max_steps: int = setting("optimizer steps; -1: train num_train_epochs epochs")
    num_train_epochs: float = setting("epochs, when max_steps is -1", min=0)
    eval_strategy: EvalStrategy = setting(
        "steps: the dev evaluators run every eval_steps while training; no: at the end only"
    )
    eval_steps: float | None = setting("steps between evaluations (below 1: a fraction of the run)", above=0)

    @staticmethod
    def rules(training: DictConfig, path: str) -> None:
        if training.max_steps == 0 or (training.max_steps < 0 and training.num_train_epochs <= 0):
            raise PipelineError(
                f"{path}.max_steps={training.max_steps} with {path}.num_train_epochs={training.num_train_epochs}: "
                "nothing would train; set max_steps > 0 or num_train_epochs > 0."
            )
        if str(training.eval_strategy) == "steps" and not training.get("eval_steps"):
            raise PipelineError(f"{path}.eval_strategy=steps needs {path}.eval_steps (a number of steps).")


@dataclass
class Tracking:
    """``tracking``: the MLflow store and what the run logs there."""

    uri: str = setting("MLflow tracking URI (any: http://127.0.0.1:5000)")
    artifact_root: str | None = setting("where a new experiment keeps its artifacts (beside a SQLite store)")
    experiment_name: str | None = setting("MLflow experiment the run goes into")
    run_name: str | None = setting("run name (null: the job name and the overrides that differ)")
    log_model: bool = setting("log the trained model in MLflow's sentence_transformers flavour")
    register_as: str | None = setting("register the logged model under this Model Registry name (null: no)")
    system_metrics: bool = setting("log MLflow's system metrics (CPU, memory, disk, network, GPUs)")
    system_metrics_interval: float = setting("seconds between system metric samples", above=0, unit="seconds")


@dataclass
class EarlyStopping:
    """``early_stopping`` (transformers' EarlyStoppingCallback): when on, the dev evaluator runs every
    ``training.eval_steps``, the best checkpoint by ``optimized_metric`` is restored when training ends,
    and the logged model and final metrics are the best one's (metrics ``best_step``, ``best_<metric>``)."""

    patience: int | None = setting(
        default=None, help="evaluations without an improvement before training stops (null: off)", min=1
    )
    threshold: float = setting(
        default=0.0, help="how much better than the best an evaluation must be to count (0: any)", min=0
    )


@dataclass
class Guard:
    """``guard`` (``pipeline.runtime.guard``): a run that goes bad is stopped and ends FAILED."""

    enabled: bool = setting(default=True, help="run the checks below while training")
    chance_patience: int = setting(
        default=100, help="steps the loss may sit at ln(candidates) (MNRL: collapsed embeddings)", min=0
    )
    nonfinite_patience: int = setting(
        default=10,
        help="fp16: consecutive logged steps with a non-finite grad_norm (GradScaler skips) before a trip",
        min=0,
    )
    chance_tolerance: float = setting(default=1.0e-3, help='how close to ln(candidates) counts as "at chance"', min=0)
    collapse_every: int = setting(
        default=50, help="steps between checks that probe sentences do not embed alike (0: off)", min=0
    )
    collapse_similarity: float = setting(
        default=0.99999, help="lowest cosine similarity between unrelated probes that means collapse", min=0, max=1
    )


@dataclass
class Job:
    """The composed config's own keys and nodes (``conf/config.yaml``); library nodes are marked ``library``."""

    smoke: bool = setting(
        default=False, help="debug=smoke sets this: sample rows in the recipe's column layout replace the data"
    )
    stages: list[Stage] = setting(
        default=["load", "train", "evaluate"],
        help="which stages run, in order: load, then mine (before train), train, evaluate; [load, evaluate] scores a model "
        "without training it, [load, mine, train, evaluate] trains on mined hard negatives",
    )
    baseline: bool = setting(
        default=True, help="score the starting model once before training (metrics under baseline/)"
    )
    baseline_reuse: bool = setting(
        default=True,
        help='copy the baseline from a FINISHED run of the store that scored the same key (README "The baseline, once"); '
        "false: compute it in this run (pipeline.rerun sets it, so that a replay checks the baseline too)",
    )
    seed: int = setting(
        default=42,
        help="seed for everything (data order, initialisation, dropout): same config + seed = same metrics on CPU; numpy's range",
        min=0,
        max=2**32 - 1,
    )
    name: str = setting(
        default="${data.name}", help="short name of the job: the MLflow experiment unless tracking says otherwise"
    )
    optimized_metric: str | None = setting(
        default="${first_dev_metric:${oc.select:evaluators,null}}",
        help="the dev metric sweeps optimise and rank runs by (dev, so test stays unseen); default: the first evaluator's "
        "primary metric on dev (evaluators=[ir,sts]: ir's); null: none, and null when no evaluator runs",
    )
    mine: Mine = node(Mine, "the mine stage's options")
    model: Model = node(Model, "the model being trained (conf/model/)")
    guide: Model | None = setting("a guide model, for GIST losses: model@guide=NAME, an option of conf/model/")
    miner: Model | None = setting(
        "the mine stage's model: model@miner=NAME, an option of conf/model/ (null: the model being trained)"
    )
    loss: LossOptions = node(LossOptions, "the loss (conf/loss/): _target_ and its arguments", library="target")
    data: Data = node(Data, "training data and its dev/test splits (conf/data/)")
    eval_data: EvalData | None = setting("evaluation data, when it is not data's own dev/test splits")
    evaluators: dict[str, Evaluator] = setting(
        "the evaluators, by option (conf/evaluators/): evaluators=[sts,ir] selects several, evaluators=[] none"
    )
    hardware: Hardware = node(Hardware, "where and how it runs (conf/hardware/)")
    training: Training = node(
        Training,
        "SentenceTransformerTrainingArguments, names unchanged (conf/training/)",
        library="sentence_transformers.SentenceTransformerTrainingArguments",
    )
    tracking: Tracking = node(Tracking, "the MLflow store (conf/tracking/)")
    early_stopping: EarlyStopping = node(EarlyStopping, "early stopping (patience null: off)")
    guard: Guard = node(Guard, "the divergence and collapse guard")
    hydra: Any = setting("Hydra's own node (Hydra checks it)", library="hydra")

    @staticmethod
    def rules(stages: ListConfig, path: str) -> None:
        """The root's one rule within a key: ``stages`` in the order they run (the other keys' rules relate
        them to other nodes: ``stages.validate``)."""
        stages = [str(s) for s in stages]
        order = [s.value for s in Stage]
        in_order = [s for s in order if s in stages] == stages and ("mine" not in stages or "train" in stages)
        if not stages or stages[0] != "load" or not in_order:
            raise PipelineError(
                f"{path}={stages}: stages run in the order load, mine, train, evaluate and start with load (mine only "
                "before train); e.g. stages=[load,evaluate] or stages=[load,mine,train,evaluate]."
            )


# --- reading the declarations ---------------------------------------------------------------------------


def declared_defaults(cls: type = Job, logged: bool = False) -> dict[str, Any]:
    """Key -> declared default, per node (a node the config may leave out, ``guide`` or ``eval_data``, gets
    none): the config Hydra composes before every file (``hydra_plugins/pipeline_settings``, first in
    ``conf/config.yaml``'s defaults list), so a setting's default is written once, here. ``logged``: the
    value a run logged before the key existed ran with (``logged_before``) where one is declared."""
    found: dict[str, Any] = {}
    for key, (kind, meta) in declared(cls).items():
        child = node_class(kind)
        if child is not None and not unwrap(kind)[1]:
            found.update({key: below} if (below := declared_defaults(child, logged)) else {})
        elif logged and "logged_before" in meta:
            found[key] = meta["logged_before"]
        elif "default" in meta:
            found[key] = meta["default"]
    return found


def declared(cls: type) -> dict[str, tuple[Any, dict]]:
    """Key -> (type, metadata) of a declared node."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}


def unwrap(kind: Any) -> tuple[Any, bool]:
    """(the type without Optional, whether null is allowed)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def node_class(kind: Any) -> type | None:
    """The declared dataclass of a node type (``Model``, ``Optional[Model]``), else None."""
    kind, _ = unwrap(kind)
    return kind if dataclasses.is_dataclass(kind) else None


def each_class(kind: Any) -> type | None:
    """The declared dataclass of each child of a ``dict[str, X]`` node, else None."""
    kind, _ = unwrap(kind)
    if typing.get_origin(kind) is dict:
        return node_class(typing.get_args(kind)[1])
    return None


def describe(kind: Any, meta: dict) -> str:
    """What a key allows, in words: ``a whole number >= 1 or null``, ``one of cpu, cuda``."""
    kind, optional = unwrap(kind)
    null = " or null" if optional else ""
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return f"one of {', '.join(m.value for m in kind)}{null}"
    if typing.get_origin(kind) is list:
        item = describe(
            typing.get_args(kind)[0], {k: v for k, v in meta.items() if k not in ("descending", "nonempty")}
        )
        order = ", largest first and each smaller than the one before" if meta.get("descending") else ""
        item = re.sub(r"^(whole number|number|string)", r"\1s", item.removeprefix("a ").removeprefix("one of "))
        return f"a {'non-empty ' if meta.get('nonempty') else ''}list of {item}{order}{null}"
    if kind is bool:
        return f"true or false{null}"
    if kind is str:
        return f"a string{null}"
    if kind is int or kind is float:
        noun = "a whole number" if kind is int else "a number"
        noun += f" of {meta['unit']}" if "unit" in meta else ""
        bounds = _bounds(meta)
        return f"{noun}{' ' + bounds if bounds else ''}{null}"
    return "any value"


def _bounds(meta: dict) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)``: the range in the metadata."""
    low, high = meta.get("min", meta.get("above")), meta.get("max", meta.get("below"))
    if low is not None and high is not None:
        return f"in {'[' if 'min' in meta else '('}{low}, {high}{']' if 'max' in meta else ')'}"
    if low is not None:
        return f"{'>=' if 'min' in meta else '>'} {low}"
    return f"{'<=' if 'max' in meta else '<'} {high}" if high is not None else ""


def fits(value: Any, kind: Any, meta: dict) -> bool:
    """Whether ``value`` (resolved, plain) is of the declared type and within its range."""
    kind, optional = unwrap(kind)
    if kind is Any:
        return True
    if value is None:
        return optional
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        text = str(value).lower() if isinstance(value, bool) else value
        return text in {m.value for m in kind}
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            return False
        item_meta = {k: v for k, v in meta.items() if k not in ("descending", "nonempty")}
        falling = not meta.get("descending") or all(a > b for a, b in zip(value, value[1:]))
        filled = bool(value) or not meta.get("nonempty")
        return all(fits(v, typing.get_args(kind)[0], item_meta) for v in value) and falling and filled
    if kind is str:  # a number is read as its text (name=2024: Hydra's grammar makes it an int)
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int or kind is float:
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            return False
        return (
            value >= meta.get("min", value)
            and value <= meta.get("max", value)
            and ("above" not in meta or value > meta["above"])
            and ("below" not in meta or value < meta["below"])
        )
    return True


def check_values(cfg: DictConfig) -> None:
    """Every declared key of the composed config against its declaration. Raises :class:`PipelineError`:
    ``hardware.num_threads=-2: a whole number >= 1 or null; threads for torch's intra-op parallelism ...``. A key the config lacks is left alone (a config composed
    without ``conf/config.yaml``'s nodes: absent means off)."""
    for key, (kind, meta) in declared(Job).items():
        if key in cfg:
            _check_value(cfg[key], kind, meta, key)
    # The cross-field rules beside the fields, once every value has its type (the mine options' only
    # when a mine stage runs).
    if cfg.get("stages") is not None:
        Job.rules(cfg.stages, "stages")  # the stages' order
    if "mine" in (cfg.get("stages") or []) and cfg.get("mine") is not None:
        Mine.rules(cfg.mine, "mine")
    if cfg.get("loss") is not None:
        LossOptions.rules(cfg.loss, "loss")
    if cfg.get("hardware") is not None:
        Hardware.rules(cfg.hardware, "hardware")  # machines and processes add up
    if {"max_steps", "num_train_epochs", "eval_strategy"} <= set(cfg.get("training") or {}):
        Training.rules(cfg.training, "training")  # something trains; steps need their interval
    if cfg.get("data") is not None:
        Data.rules(cfg.data, "data")  # prompts for the columns it trains on


def _check_node(node: DictConfig, cls: type, path: str) -> None:
    """A declared node's keys (its cross-field ``rules`` run after every value: :func:`check_values`)."""
    for key, (kind, meta) in declared(cls).items():
        if key in node:
            _check_value(node[key], kind, meta, f"{path}.{key}")


def _check_value(value: Any, kind: Any, meta: dict, path: str) -> None:
    if kind is Any and "library" in meta:
        return  # a library's node: the library checks it
    child, each = node_class(kind), each_class(kind)
    if child is not None and isinstance(value, DictConfig):
        _check_node(value, child, path)
    elif each is not None and isinstance(value, DictConfig):
        for name in value:
            _check_node(value[name], each, f"{path}.{name}")
    elif child is None and each is None:
        plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        if not fits(plain, kind, meta):
            raise PipelineError(f"{path}={plain!r}: {describe(kind, meta)}; {meta.get('help', '')}.")

"""The language's vocabulary as data: blocks, keys, call signatures, metrics.

The checker validates against these tables, the resolver fills their defaults,
`sftc diff` compares through them and docs/language.md documents them. Defaults
are written as source text, exactly as a user would write them. The calls whose
settings the plan carries as typed classes (optimizers, schedules, `init llama`,
`train sentencepiece`) take their names, defaults and ranges from those classes
(`runtime.plan.settings`), so each exists once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from runtime.plan import settings as plan_types
from runtime.plan.data_plan import CONVERSATION_ROLES, FORMATS
from runtime.plan.run_plan import QUANTIZATIONS

from .types import (
    Bool,
    Calls,
    Column,
    Enum,
    Every,
    InitModel,
    ListOf,
    Literal,
    Mapping,
    Mixture,
    NameOrString,
    Num,
    OneOf,
    Param,
    Quantity,
    Record,
    Seeded,
    Share,
    Signature,
    Str,
    TrainTokenizer,
    Type,
)


@dataclass(frozen=True)
class Key:
    name: str
    type: Type
    default: str | None = None  # source text; None: absent unless given
    doc: str = ""
    required: bool = False
    label: str | None = None  # `split eval = ...`: the one label this key takes
    default_from: str | None = None  # another key of the same block whose value is the default


POSITIVE = Num(low=0, open_low=True)
NON_NEGATIVE = Num(low=0)
COUNT = Num(low=1, integer=True)
SEED = Num(low=0, integer=True)
PATH = Str(non_empty=True, doc="a path string")
OFF = Enum(("off",))
STEPS_OR_SHARE = OneOf((Share(low=0, high=1, open_high=True), Quantity(("steps",)), Num(low=0, high=0)))
SHARE_OF_LR = Share(low=0, high=1)


def source_text(value) -> str:
    """A default as a user writes it: `on`, `unigram`, `4096`, `2e-5`, `0.9`."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).replace("+", "") + m.group(2), repr(value))
    return str(value)


def length_text(length: plan_types.Length) -> str:
    """A Length as a user writes it: `0`, `20 steps`, `10%`."""
    if length.share is not None:
        return f"{length.share * 100:g}%"
    return f"{length.steps} steps" if length.steps else "0"


def _type_of(rule: plan_types.Rule) -> Type:
    if rule.form == plan_types.LENGTH:
        return STEPS_OR_SHARE
    if rule.flag:
        return Bool()
    if rule.choices:
        return Enum(rule.choices)
    number = Num(rule.low, rule.high, rule.integer, rule.open_low, rule.open_high)
    if rule.form == plan_types.SHARE_OF_LR:
        return OneOf((SHARE_OF_LR, number))
    return number


def _default_text(value) -> str:
    return length_text(value) if isinstance(value, plan_types.Length) else source_text(value)


def signature_of(settings: type, doc: str = "") -> Signature:
    """The call signature of a typed plan setting: its fields in order, their defaults
    (None: absent unless given) as the spec writes them, types (a Rule's `form` for a
    value the spec writes in another shape), ranges and docs."""
    params = []
    for f in dataclasses.fields(settings):
        if not f.init:
            continue
        rule = f.metadata["rule"]
        required = f.default is dataclasses.MISSING
        default = None if required or f.default is None else _default_text(f.default)
        params.append(Param(f.name, _type_of(rule), default, required, rule.doc, rule.default_from))
    return Signature(tuple(params), doc=doc)


# ---------------------------------------------------------------- model

LAYER_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")

BASE_MODEL = OneOf(
    (
        Calls(
            {
                "hf": Signature(
                    (
                        Param("path", PATH, required=True, doc="a local checkpoint directory or a hub id"),
                        Param("revision", Str(), doc="a hub revision (branch, tag or commit)"),
                    ),
                    positional=1,
                    doc="a Hugging Face checkpoint: a local directory, or a hub id when online",
                ),
            },
            what="base model",
        ),
        InitModel(
            Calls(
                {
                    "llama": signature_of(
                        plan_types.LlamaInit, doc="a Llama-architecture decoder with fresh random weights"
                    )
                },
                what="architecture",
            )
        ),
    )
)

TOKENIZER = OneOf(
    (
        Enum(("base",)),
        Calls(
            {
                "hf": Signature(
                    (
                        Param("path", PATH, required=True),
                        Param("revision", Str(), doc="a hub revision (branch, tag or commit)"),
                    ),
                    positional=1,
                    doc="a tokenizer directory, or a hub id",
                ),
                "sentencepiece": Signature(
                    (Param("path", PATH, required=True),), positional=1, doc="a sentencepiece `.model` file"
                ),
            },
            what="tokenizer",
        ),
        TrainTokenizer(
            Calls(
                {
                    "sentencepiece": signature_of(
                        plan_types.SentencepieceTraining, doc="train a sentencepiece tokenizer on a data source's text"
                    )
                },
                what="tokenizer",
            )
        ),
    )
)

ADAPTER = OneOf(
    (
        Enum(("none",)),
        Calls(
            {
                "lora": Signature(
                    (
                        Param("rank", Num(low=1, high=4096, integer=True), "16"),
                        Param("alpha", POSITIVE, default_from="rank", doc="scaling numerator; default: rank"),
                        Param("dropout", Num(low=0, high=1, open_high=True), "0.0"),
                        Param("targets", ListOf(Enum(LAYER_TARGETS)), "[q, k, v, o]"),
                    ),
                    doc="low-rank adapters on the listed projections; the base stays frozen",
                )
            },
            what="adapter",
        ),
    )
)

MODEL_KEYS = (
    Key("base", BASE_MODEL, required=True, doc='the model to fine-tune: `hf("dir")` or `init llama(...)`'),
    Key(
        "tokenizer",
        TOKENIZER,
        "base",
        doc=(
            '`base` (the checkpoint\'s), `hf("dir")`, `sentencepiece("file.model")` or `train '
            "sentencepiece(vocab = N) on SOURCE`"
        ),
    ),
    Key(
        "dtype",
        Enum(("float32", "bfloat16")),
        "float32",
        doc="parameter and compute dtype; optimizer state stays float32",
    ),
    Key("adapter", ADAPTER, "none", doc="`none` (full fine-tune) or `lora(...)`"),
    Key(
        "quantize",
        Enum(("none",) + QUANTIZATIONS),
        "none",
        doc=(
            "how the frozen base of a LoRA run is stored: `none` (in `dtype`), `int8` (8-bit, one scale per "
            "output channel) or `nf4` (4-bit NormalFloat, one scale per 64 inputs, as QLoRA)"
        ),
    ),
)

# ---------------------------------------------------------------- data

SOURCES = Calls(
    {
        "jsonl": Signature((Param("path", PATH, required=True),), positional=1, doc="JSON lines; globs allowed"),
        "json": Signature(
            (Param("path", PATH, required=True), Param("field", Str(), doc="the key holding the rows")),
            positional=1,
            doc="a JSON array of objects (or under `field`)",
        ),
        "csv": Signature(
            (
                Param("path", PATH, required=True),
                Param("delimiter", Str(non_empty=True, blank_ok=True), '","', doc='the field separator; "\\t" for TSV'),
            ),
            positional=1,
            doc="CSV with a header row",
        ),
        "parquet": Signature((Param("path", PATH, required=True),), positional=1, doc="Parquet files; globs allowed"),
        "arrow": Signature(
            (Param("path", PATH, required=True),),
            positional=1,
            doc="Arrow IPC stream files, as `datasets` writes them; globs allowed",
        ),
        "text": Signature(
            (Param("path", PATH, required=True),), positional=1, doc="plain text, one row per line in column `text`"
        ),
        "disk": Signature(
            (Param("path", PATH, required=True),), positional=1, doc="a dataset saved with `save_to_disk`"
        ),
        "hf_dataset": Signature(
            (
                Param("name", Str(non_empty=True), required=True),
                Param("split", Str(non_empty=True), '"train"'),
                Param("subset", Str()),
                Param("revision", Str()),
            ),
            positional=1,
            doc="a dataset from the Hugging Face hub (or its local cache)",
        ),
    },
    what="data source",
)

DATA_KEYS = (
    Key(
        "split",
        OneOf((Seeded(Share(low=0, high=1, open_low=True, open_high=True)), SOURCES)),
        label="eval",
        doc='held-out rows: `split eval = 5% seed 7` or `split eval = jsonl("eval.jsonl")`',
    ),
    Key(
        "overflow",
        Enum(("drop", "truncate", "error")),
        "drop",
        doc="rows longer than `train.seq_len`: counted and reported",
    ),
    Key("on_bad_row", Enum(("error", "skip")), "error", doc="a malformed row stops the run, or is skipped and counted"),
    Key(
        "rename",
        Mapping(NameOrString(), "COLUMN"),
        doc="columns renamed before templating: `(old = new, ...)`, each side a name or a string",
    ),
    Key(
        "where",
        Mapping(Literal(lists=True), "COLUMN"),
        doc=(
            "keep only the rows whose column (a dotted path) equals the value, or one of a list; the others are "
            "counted as filtered"
        ),
    ),
    Key(
        "system",
        Str(non_empty=True),
        doc=(
            "a system message for every conversation of this source that has none (conversation rows, and "
            "prompt/completion or Alpaca rows with `chat = on`; other rows refuse it, E045)"
        ),
    ),
    Key(
        "dedup",
        OneOf(
            (
                Enum(("exact",)),
                Calls(
                    {
                        "near": Signature(
                            (
                                Param(
                                    "threshold",
                                    Num(low=0, high=1, open_low=True),
                                    "0.9",
                                    doc="the Jaccard similarity of the rendered texts' 5-character shingles",
                                ),
                            ),
                            positional=1,
                            doc="near copies too: a similarity of at least the threshold",
                        )
                    },
                    what="dedup",
                ),
            )
        ),
        doc=(
            "drop copies among this source's training examples before training, keeping the first of each: "
            "`exact` (the same rendered text) or `near(0.9)`; counted and reported; eval rows are never dropped"
        ),
    ),
)

TEMPLATE_KEYS = (
    Key("prompt", Str(), doc="the prompt text; `{column}` placeholders"),
    Key("completion", Str(), doc="the trained text; `{column}` placeholders; EOS is appended"),
    Key("messages", Column(), doc="the column holding `[{role, content}]` conversations (OpenAI or ShareGPT style)"),
    Key(
        "format",
        Enum(FORMATS),
        doc=(
            "a whole-row shape instead of prompt/completion: `alpaca` (columns instruction, input, output) or "
            "`tokens` (input_ids with labels or loss_mask)"
        ),
    ),
    Key(
        "train_on",
        Enum(("assistant", "last_assistant", "all")),
        doc="which turns of `messages` are trained (default `assistant`)",
    ),
    Key(
        "roles",
        Mapping(Enum(CONVERSATION_ROLES), "ROLE"),
        doc=(
            "more role names of the conversations: `(bot = assistant, ...)`, each mapped to system, user, "
            "assistant or tool"
        ),
    ),
    Key(
        "keys",
        Record(
            Signature(
                (
                    Param("role", NameOrString(), doc="the message key holding the role"),
                    Param("content", NameOrString(), doc="the message key holding the text"),
                )
            )
        ),
        doc="the message keys, when not `role`/`content` (or ShareGPT's `from`/`value`)",
    ),
    Key(
        "tools",
        Column(),
        doc="the column of function schemas given to the chat template (default: `tools` when the source has it)",
    ),
    Key(
        "chat",
        Bool(),
        "off",
        doc=(
            "render prompt/completion through the tokenizer's chat template: the prompt as the user turn, the "
            "completion as the assistant's (for instruct models)"
        ),
    ),
    Key("system", Str(), doc="a system message before the prompt (with `chat = on`)"),
)

# ---------------------------------------------------------------- train

OPTIMIZERS = Calls({name: signature_of(settings) for name, settings in plan_types.OPTIMIZERS.items()}, what="optimizer")

# Schedules are written as the user thinks of them (`warmup = 3%`, `min_lr = 10%`): their
# fields' Rules say so (`form`), and `sftlang.lower` turns them into Lengths and absolute rates.
SCHEDULES = Calls({name: signature_of(settings) for name, settings in plan_types.SCHEDULES.items()}, what="schedule")

AUTO_OR_COUNT = OneOf((Enum(("auto",)), COUNT))
MESH = Record(
    Signature(
        (
            Param("data", AUTO_OR_COUNT, "auto", doc="data-parallel replicas"),
            Param("fsdp", AUTO_OR_COUNT, "1", doc="parameter-sharded data parallelism"),
            Param("tensor", COUNT, "1", doc="tensor (model) parallelism"),
        )
    )
)

TRAIN_KEYS = (
    Key("data", Mixture(), doc="sources and sampling weights; default: every declared source, concatenated"),
    Key("epochs", Num(low=0, open_low=True), doc="passes over the training rows (default 1 when `steps` is absent)"),
    Key("steps", COUNT, doc="optimizer steps (instead of `epochs`)"),
    Key("batch", COUNT, "8", doc="sequences per optimizer step, global"),
    Key("micro", COUNT, default_from="batch", doc="sequences per forward pass; accumulation = batch / micro"),
    Key("seq_len", Num(low=8, high=1_048_576, integer=True), "1024", doc="tokens per sequence"),
    Key("packing", Bool(), "off", doc="pack several examples into each sequence"),
    Key(
        "optimizer",
        OPTIMIZERS,
        f"{plan_types.AdamW.name}(lr = {source_text(plan_types.DEFAULT_LR)})",
        doc="adamw, adafactor, lion or sgd",
    ),
    Key(
        "schedule",
        SCHEDULES,
        "cosine(warmup = 3%, min_lr = 10%)",
        doc="learning-rate schedule; warmup as a share or `N steps`; min_lr as a share of lr or absolute",
    ),
    Key("clip", OneOf((OFF, POSITIVE)), "1.0", doc="global gradient-norm clipping, or `off`"),
    Key("remat", Enum(("off", "full", "dots")), "off", doc="activation recomputation policy"),
    Key("seed", SEED, "42", doc="initialisation, shuffling and dropout seed"),
    Key(
        "mesh", MESH, "(data = auto, fsdp = 1, tensor = 1)", doc="device mesh; the product must equal the device count"
    ),
    Key(
        "checkpoint",
        OneOf((OFF, Every())),
        "every 500 steps keep 3",
        doc="`every N steps keep K` or `off`; the final state is always saved",
    ),
    Key(
        "log_every",
        OneOf((Enum(("auto",)), Quantity(("steps",)))),
        "auto",
        doc="metrics logging interval; `auto` logs every step of runs up to 200 steps, about 200 records otherwise",
    ),
    Key(
        "max_skipped_steps",
        Num(low=0, integer=True),
        "0",
        doc=(
            "steps with a non-finite loss or gradient that may be skipped (update refused, counted and reported) "
            "before the run stops; 0 stops at the first"
        ),
    ),
)

# ---------------------------------------------------------------- eval

GENERATION = Calls(
    {
        "greedy": Signature((Param("max_new_tokens", COUNT, "128"),)),
        "sample": Signature(
            (
                Param("max_new_tokens", COUNT, "128"),
                Param("temperature", POSITIVE, "1.0"),
                Param("top_p", Num(low=0, high=1, open_low=True), "1.0"),
                Param("top_k", Num(low=0, integer=True), "0", doc="0: no top-k cut"),
                Param("seed", SEED, "0"),
            )
        ),
    },
    what="decoding",
)

BASELINE = OneOf(
    (
        Enum(("auto", "base", "off")),
        Calls(
            {
                "few_shot": Signature(
                    (
                        Param("k", COUNT, "3", doc="training pairs of the row's source placed before its prompt"),
                        Param("seed", SEED, "0", doc="which training pairs: a seeded draw"),
                    )
                )
            },
            what="baseline",
        ),
    )
)

BENCHMARKS = Calls(
    {
        "lm_eval": Signature(
            (
                Param(
                    "tasks",
                    ListOf(NameOrString()),
                    required=True,
                    doc="lm-evaluation-harness tasks (or groups): the spec's own in `include`, or lm_eval's",
                ),
                Param(
                    "include",
                    Str(non_empty=True),
                    doc="a folder of task YAML files, relative to the spec (lm_eval's `--include_path`)",
                ),
                Param("limit", COUNT, doc="the first N documents of each task; default: all"),
                Param(
                    "num_fewshot", Num(low=0, integer=True), doc="examples before each question; default: the task's"
                ),
                Param("batch_size", COUNT, "16", doc="requests scored per forward pass"),
            ),
            doc="lm-evaluation-harness tasks scored on the tuned model and on the base, with sftc's own model",
        )
    },
    what="benchmark suite",
)

EVAL_KEYS = (
    Key(
        "every",
        OneOf((OFF, Quantity(("steps", "epochs")))),
        "off",
        doc="periodic evaluation of loss metrics; the final one always runs",
    ),
    Key(
        "generate",
        OneOf((OFF, GENERATION)),
        "off",
        doc="decoding for generation metrics: `greedy(...)` or `sample(...)`",
    ),
    Key("samples", OneOf((Enum(("all",)), COUNT)), "200", doc="eval rows used for generation metrics"),
    Key(
        "baseline",
        BASELINE,
        "auto",
        doc=(
            "what the tuned model is compared with: `base` (the pretrained model, same prompts), `few_shot(k = "
            "3)` (the base with k training pairs in the prompt) or `off`; `auto` is `base` for a pretrained base "
            "and `off` for `init`"
        ),
    ),
    Key(
        "benchmarks",
        OneOf((OFF, BENCHMARKS)),
        "off",
        doc="standard benchmarks on the tuned model and the base: `lm_eval(tasks = [...], limit = N)`; gate them as "
        "`acc(task)`",
    ),
)

# ---------------------------------------------------------------- output

TRACKERS = Calls(
    {
        "tensorboard": Signature((), doc="TensorBoard event files under `RUN/tb/`"),
        "mlflow": Signature(
            (
                Param(
                    "uri",
                    Str(non_empty=True),
                    doc="tracking server or store; default: `MLFLOW_TRACKING_URI`, else `sqlite:///` beside the runs",
                ),
                Param("experiment", Str(non_empty=True), doc="the MLflow experiment; default: the spec's name"),
            ),
            doc="an MLflow run: the plan as params, every metric at its step, gates, verdict, report artifacts",
        ),
        "wandb": Signature(
            (
                Param("project", Str(non_empty=True), doc="the W&B project; default: the spec's name"),
                Param("entity", Str(non_empty=True), doc="the W&B team or user; default: the API key's"),
                Param(
                    "mode",
                    Enum(("online", "offline")),
                    "online",
                    doc="`offline` keeps the run in `RUN/wandb/` for `wandb sync`",
                ),
            ),
            doc="a W&B run: the plan as config, every metric at its step, gates and verdict in its summary, the report",
        ),
        "trackio": Signature(
            (Param("project", Str(non_empty=True), doc="the Trackio project; default: the spec's name"),),
            doc="a Trackio run in its local store: the plan as config, every metric at its step, final values",
        ),
    },
    what="tracker",
)
# The package each tracker needs beyond sftc's own, and the extra that installs it.
TRACKER_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}

OUTPUT_KEYS = (
    Key("dir", Str(non_empty=True), '"runs/{name}"', doc="run directory; `{name}` is the spec's name"),
    Key(
        "export",
        Enum(("hf", "peft", "gguf", "none")),
        "hf",
        doc="format written after an accepted run (`gguf`: one f16 GGUF file and an Ollama Modelfile)",
    ),
    Key(
        "shard_size",
        Quantity(("KiB", "MiB", "GiB", "KB", "MB", "GB")),
        "5 GiB",
        doc="largest safetensors shard of the export",
    ),
    Key(
        "track",
        ListOf(OneOf((Enum(("tensorboard",)), TRACKERS))),
        "[tensorboard]",
        doc="where metrics go besides `metrics.jsonl`: `tensorboard`, `mlflow(uri = ..., experiment = ...)`, "
        "`wandb(project = ..., entity = ..., mode = online | offline)`, `trackio(project = ...)`",
    ),
)

BLOCKS: dict[str, tuple[Key, ...]] = {
    "model": MODEL_KEYS,
    "train": TRAIN_KEYS,
    "eval": EVAL_KEYS,
    "accept": (),
    "output": OUTPUT_KEYS,
}
DECLARATIONS = ("sft", "use", "data", "template")

# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    name: str
    better: str | None  # "higher", "lower", or None when neither is better
    low: float
    high: float
    generation: bool
    doc: str
    pattern: bool = False  # takes a regex pattern as first argument
    review: bool = False  # read from expert reviews (`sftc review`), not computed
    data: bool = False  # a property of the data (`sftc audit`), judged before the first step; `==` allowed
    benchmark: bool = False  # an lm_eval task's metric: `acc(arc_easy)` names the task, never a source

    @property
    def gains(self) -> bool:
        """Whether `gain(metric)` is defined: a computed metric of the model with a better direction."""
        return self.better is not None and not self.review and not self.data


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("loss", "lower", 0, math.inf, False, "mean cross-entropy over trained eval tokens"),
        Metric("perplexity", "lower", 1, math.inf, False, "exp(loss)"),
        Metric("token_accuracy", "higher", 0, 1, False, "share of trained eval tokens predicted exactly"),
        Metric("exact_match", "higher", 0, 1, True, "share of generations equal to the reference (normalised)"),
        Metric("rouge_1", "higher", 0, 1, True, "ROUGE-1 F1 (rouge-score)"),
        Metric("rouge_2", "higher", 0, 1, True, "ROUGE-2 F1 (rouge-score)"),
        Metric("rouge_l", "higher", 0, 1, True, "ROUGE-L F1 (rouge-score)"),
        Metric("bleu", "higher", 0, 100, True, "corpus BLEU (sacrebleu), 0-100"),
        Metric("chrf", "higher", 0, 100, True, "corpus chrF (sacrebleu), 0-100"),
        Metric("json_valid", "higher", 0, 1, True, "share of generations that parse as JSON"),
        Metric("json_match", "higher", 0, 1, True, "share of generations whose parsed JSON equals the reference's"),
        Metric("regex", "higher", 0, 1, True, 'share of generations matching `regex("pattern")`', pattern=True),
        Metric("mean_tokens", None, 0, math.inf, True, "mean generated tokens"),
        Metric("max_tokens", None, 0, math.inf, True, "longest generation in tokens"),
        Metric(
            "review_score",
            "higher",
            1,
            5,
            True,
            "mean expert score (1-5) of the tuned answers, from `sftc review`",
            review=True,
        ),
        Metric("review_flagged", "lower", 0, 1, True, "share of tuned answers an expert flagged", review=True),
        Metric(
            "review_wins",
            "higher",
            0,
            1,
            True,
            "share of rows where experts scored the tuned answer above the baseline's",
            review=True,
        ),
        Metric("acc", "higher", 0, 1, False, "accuracy on an lm_eval task: `acc(arc_easy)`", benchmark=True),
        Metric("acc_norm", "higher", 0, 1, False, "length-normalised accuracy on an lm_eval task", benchmark=True),
        Metric("f1", "higher", 0, 1, False, "F1 on an lm_eval task", benchmark=True),
        Metric("mcc", "higher", -1, 1, False, "Matthews correlation on an lm_eval task", benchmark=True),
        Metric("word_perplexity", "lower", 1, math.inf, False, "word perplexity on an lm_eval task", benchmark=True),
        Metric("byte_perplexity", "lower", 1, math.inf, False, "byte perplexity on an lm_eval task", benchmark=True),
        Metric("bits_per_byte", "lower", 0, math.inf, False, "bits per byte on an lm_eval task", benchmark=True),
        Metric(
            "leakage",
            "lower",
            0,
            math.inf,
            False,
            "eval rows with an exact or near copy in the training data (`sftc audit`), before the first step",
            data=True,
        ),
        Metric(
            "duplicates",
            "lower",
            0,
            1,
            False,
            "share of training rows that are exact or near copies of an earlier one, after `dedup`",
            data=True,
        ),
        Metric(
            "conflicts",
            "lower",
            0,
            math.inf,
            False,
            "groups of training rows with the same or nearly the same prompt and different answers",
            data=True,
        ),
        Metric(
            "suspects",
            "lower",
            0,
            math.inf,
            False,
            "suspect training and eval rows (empty answers, truncated, personal data, ...)",
            data=True,
        ),
    )
}
# metrics of sftc's own that an lm_eval task reports too, on the same scale: `exact_match(gsm8k)`
BENCHMARK_SHARED = ("exact_match", "bleu", "chrf")
DATA_COMPARATORS = ("==",)  # also allowed for data metrics: `leakage == 0`
GAIN = "gain"  # `gain(rouge_l) >= 0.1`: the improvement over the baseline (lower-is-better metrics: baseline - tuned)
COMPARATORS = ("<=", ">=", "<", ">")


def keys_of(block: str) -> dict[str, Key]:
    return {k.name: k for k in BLOCKS[block]}

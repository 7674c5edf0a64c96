"""LoRA / QLoRA on a SmolLM2-135M-shaped Llama: sftc's step against transformers + peft + bitsandbytes.

Why: a quantized base (``model { quantize = int8 | nf4 }``) exists to make a LoRA run fit in
less memory. This measures, for each way of storing the frozen base, what the run costs in
host memory and in time on this machine, against the peer most people would use.

The run (both sides): SmolLM2-135M's shape (30 layers, hidden 576, 9/3 heads of 64, ffn 1536,
vocab 49152, tied embeddings, rms eps 1e-5, rope theta 100000), random weights (normal, std
0.02), LoRA rank 16, alpha 32, dropout 0 on q, k, v, o; AdamW lr 1e-4 (no weight decay),
constant schedule, gradient clipping at 1.0; a batch of 8 x 256 random tokens, every token
trained. Base storage:

* ``float32``, ``bfloat16``: the base in that dtype (compute in it too);
* ``int8``, ``nf4``: the base's block projections (q k v o gate up down) quantized, compute in
  bfloat16; ``nf4-f32``: nf4 with float32 compute (an extra row).

sftc: `runtime.train.throughput.StepBench` (the step a run builds: `runtime.train.engine`, with
``StepSettings(adapter=LoraPlan(...), quantize=None | "int8" | "nf4")``). Its base is
initialised in the process; an int8/nf4 base is initialised in float32 and quantized there
(`runtime.train.engine.load_weights` without a checkpoint), so a float32 copy exists for a moment
at start-up. XLA's own accounting of the compiled step (``compiled.memory_analysis()``:
arguments + temporaries) is reported beside the process's RSS.

peer: ``transformers.LlamaForCausalLM`` (SDPA attention) with ``peft.get_peft_model`` and
``LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=[q,k,v,o]_proj)``,
``torch.optim.AdamW`` over the trainable parameters, ``torch.nn.utils.clip_grad_norm_``;
``labels = input_ids`` (transformers shifts them). float32 / bfloat16: the model built in the
process (``.to(torch.bfloat16)`` for the latter; peft makes the adapters float32). int8 / nf4:
the script first writes the random float32 model with ``save_pretrained`` to a temp dir (in a
process of its own), and each run loads it with ``from_pretrained(quantization_config=
BitsAndBytesConfig(...), device_map="cpu", dtype=torch.bfloat16)``: ``load_in_8bit`` (LLM.int8,
``Linear8bitLt``) or ``load_in_4bit`` with ``bnb_4bit_quant_type="nf4"``, compute dtype
bfloat16 (float32 and a float32 model for ``nf4-f32``), bitsandbytes' block size of 64.
``from_pretrained`` accepts the CPU with bitsandbytes 0.50, so no layer is replaced by hand.
In training on the CPU, bitsandbytes dequantizes and then multiplies in the compute dtype
(``MatMul8bitFp`` for int8, ``MatMul4Bit`` for nf4): no integer matmul on either side.
bitsandbytes logs that it could not load the kernels-community CPU kernel and falls back to
its own C kernels; the table's notes say so when it happens. No ``prepare_model_for_kbit_training``
and no gradient checkpointing on either side.

Each configuration runs in a fresh subprocess (``--one <side> <storage>``, which prints one
JSON line), sftc then peer for each storage, so each one's peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own; "after load" is the RSS once the model and
optimizer exist, before the first step (for sftc that is after compiling too). Per run: 2
warm-up steps, then ``--steps`` timed ones (median). sftc's processes run with
`runtime.platform.allocator`'s malloc settings (freed memory stays mapped, which raises the peak RSS);
``--malloc system`` runs them with glibc's own (``SFTC_MALLOC=system``). The peer always runs
with glibc's own.

    .venv/bin/python bench/qlora_vs_peft.py                      # the full shape, ~12 min on 2 quiet cores
    .venv/bin/python bench/qlora_vs_peft.py --malloc system
    .venv/bin/python bench/qlora_vs_peft.py --layers 2 --batch 2 --seq-len 64 --steps 2   # a quick check
    .venv/bin/python bench/qlora_vs_peft.py --only nf4 int8 --json

Quiet machine only: on 2 cores anything else running slows both sides (the peer's OpenMP
threads the most); the script prints how much CPU other processes took while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
STORAGES = ("float32", "bfloat16", "int8", "nf4", "nf4-f32")
# storage -> (compute dtype, sftc's quantize setting)
HOW = {
    "float32": ("float32", None),
    "bfloat16": ("bfloat16", None),
    "int8": ("bfloat16", "int8"),
    "nf4": ("bfloat16", "nf4"),
    "nf4-f32": ("float32", "nf4"),
}
WARMUP = 2


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--batch", type=int, default=8, help="rows per optimizer step")
    p.add_argument("--micro", type=int, default=None, help="rows per micro-batch (default: --batch)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=6, help=f"timed steps per configuration (after {WARMUP} warm-up)")
    p.add_argument("--only", nargs="+", choices=STORAGES, help="these storages only")
    p.add_argument("--sides", nargs="+", choices=("sftc", "peer"), default=["sftc", "peer"])
    p.add_argument(
        "--malloc",
        choices=("reuse", "system"),
        default="reuse",
        help="sftc's processes: runtime.platform.allocator's malloc settings (default) or glibc's own",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--one", nargs=2, metavar=("SIDE", "STORAGE"), help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.micro = a.batch if a.micro is None else a.micro
    if a.micro < 1 or a.batch % a.micro:
        p.error(f"--batch {a.batch} is not a whole number of micro-batches of {a.micro}")
    return a


SHAPE = dict(vocab=49152, hidden=576, ffn=1536, heads=9, kv_heads=3, head_dim=64, eps=1e-5, theta=100000.0, init=0.02)


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _tokens(a):
    """The batch both sides train on: [batch, seq_len] random ids (numpy, seed 0)."""
    import numpy as np

    return np.random.default_rng(0).integers(0, SHAPE["vocab"], (a.batch, a.seq_len), dtype=np.int64)


# ------------------------------------------------------------------ sftc


def run_sftc(a, storage: str) -> dict:
    """One configuration in this process: StepBench, warm-up, timed steps."""
    sys.path.insert(0, str(ROOT))
    import jax

    from runtime.models import ModelConfig
    from runtime.plan.run_plan import LoraPlan
    from runtime.plan.settings import SCHEDULES, AdamW
    from runtime.platform import allocator
    from runtime.train.engine import StepSettings
    from runtime.train.throughput import StepBench

    dtype, quantize = HOW[storage]
    s = SHAPE
    config = ModelConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_layers=a.layers,
        num_heads=s["heads"],
        num_kv_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        tie_embeddings=True,
        rope_theta=s["theta"],
        rms_norm_eps=s["eps"],
        initializer_range=s["init"],
    )
    total = WARMUP + a.steps
    settings = StepSettings(
        steps=max(total, 2),
        micro=a.micro,
        accumulation=a.batch // a.micro,
        dtype=dtype,
        optimizer=AdamW(lr=1e-4),
        schedule=SCHEDULES["constant"]().decided(max(total, 2)),
        clip=1.0,
        mesh={"data": "auto"},
        adapter=LoraPlan(16, 32.0, 0.0, ("q", "k", "v", "o")),
        seed=0,
        quantize=quantize,
    )
    bench = StepBench(config, settings, a.seq_len)
    loaded = _rss_now()
    analysis = bench.compiled.memory_analysis()
    bench.run(1)
    first = bench.loss
    bench.run(WARMUP - 1)
    times = bench.run(a.steps)
    return {
        "params": bench.params,
        "trainable": bench.trainable,
        "loss_first": first,
        "loss_last": bench.loss,
        "times": times,
        "rss_loaded": loaded,
        "compile_s": bench.compile_s,
        "xla_arguments": analysis.argument_size_in_bytes,
        "xla_temporaries": analysis.temp_size_in_bytes,
        "xla_outputs_unaliased": analysis.output_size_in_bytes - analysis.alias_size_in_bytes,
        "page_faults_per_step": bench.faults_per_step,
        "malloc": allocator.status(),
        "device": f"{len(bench.devices)} x {bench.devices[0].device_kind}",
        "jax": jax.__version__,
    }


# ------------------------------------------------------------------ peer


def _hf_config(a):
    from transformers import LlamaConfig

    s = SHAPE
    return LlamaConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_hidden_layers=a.layers,
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        head_dim=s["head_dim"],
        tie_word_embeddings=True,
        rms_norm_eps=s["eps"],
        rope_theta=s["theta"],
        initializer_range=s["init"],
        max_position_embeddings=max(2048, a.seq_len),
        use_cache=False,
        attention_dropout=0.0,
    )


def save_checkpoint(a, path: str) -> None:
    """The random float32 model the peer's bitsandbytes runs load (written in a process of its own)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(_hf_config(a)).save_pretrained(path)


def run_peer(a, storage: str) -> dict:
    import logging
    import warnings

    notes: list[str] = []

    def keep(message: str) -> None:  # bitsandbytes' fallbacks and casts, for the table's notes
        if "kernels-community" in message:
            message = (
                "bitsandbytes (imported by peft in every peer run): the kernels-community CPU kernel did not "
                "load (untrusted repository), its own C kernels ran"
            )
        message = message.splitlines()[0][:200]
        if message not in notes:
            notes.append(message)

    class Keep(logging.Handler):
        def emit(self, record):
            keep(record.getMessage())

    logging.getLogger("bitsandbytes").addHandler(Keep(level=logging.WARNING))  # before bitsandbytes is imported
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "bitsandbytes" in filename or "peft" in filename:
            keep(str(message))
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype, quantize = HOW[storage]
    tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    if quantize is None:
        model = LlamaForCausalLM(_hf_config(a)).to(tdtype)
        model.config._attn_implementation = "sdpa"
    else:
        from transformers import BitsAndBytesConfig

        if quantize == "int8":
            bnb = BitsAndBytesConfig(load_in_8bit=True)
        else:
            bnb = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=tdtype,
                bnb_4bit_use_double_quant=False,
            )
        model = LlamaForCausalLM.from_pretrained(
            a.checkpoint, quantization_config=bnb, device_map="cpu", dtype=tdtype, attn_implementation="sdpa"
        )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.from_numpy(_tokens(a))
    micro = [ids[i : i + a.micro] for i in range(0, a.batch, a.micro)]
    loaded = _rss_now()
    base = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer

    def step() -> tuple[float, float]:
        started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for rows in micro:
            loss = model(input_ids=rows, labels=rows, use_cache=False).loss / len(micro)
            loss.backward()
            total += loss.detach().item()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return time.perf_counter() - started, total

    _, first = step()
    for _ in range(WARMUP - 1):
        step()
    times, last = [], first
    for _ in range(a.steps):
        t, last = step()
        times.append(t)
    import bitsandbytes
    import peft
    import transformers

    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "loss_first": first,
        "loss_last": last,
        "times": times,
        "rss_loaded": loaded,
        "base_layer": f"{type(base).__module__.split('.')[0]}.{type(base).__name__} ({base.weight.dtype})".replace(
            "torch.", ""
        ),
        "notes": notes,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


# ------------------------------------------------------------------ driver


def one(a) -> None:
    """``--one SIDE STORAGE``: run it here and print one JSON line (errors included)."""
    side, storage = a.one
    try:
        out = run_sftc(a, storage) if side == "sftc" else run_peer(a, storage)
        out["peak_rss"] = _peak_rss()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300], "peak_rss": _peak_rss()}
    print("@@RESULT " + json.dumps(out), flush=True)


def _child_args(a) -> list[str]:
    return [
        "--layers",
        str(a.layers),
        "--batch",
        str(a.batch),
        "--micro",
        str(a.micro),
        "--seq-len",
        str(a.seq_len),
        "--steps",
        str(a.steps),
        "--threads",
        str(a.threads),
    ]


def _spawn(a, extra: list[str], env: dict | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *extra, *_child_args(a)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=a.timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {a.timeout:.0f} s", "wall_s": a.timeout}
    wall = time.perf_counter() - started
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            out = json.loads(line[len("@@RESULT ") :])
            out["wall_s"] = wall
            return out
    tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
    return {"error": f"exit {done.returncode}: {tail[0][:300]}", "wall_s": wall}


def _busy_seconds() -> float | None:
    """CPU seconds all processes have run so far (/proc/stat), None off Linux."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_and_children() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _summary(result: dict, tokens: int) -> dict:
    if "error" in result:
        return result
    median = statistics.median(result["times"])
    out = {
        **result,
        "step_ms": median * 1e3,
        "step_ms_min": min(result["times"]) * 1e3,
        "tokens_per_s": tokens / median,
        "peak_mib": result["peak_rss"] / MiB,
        "loaded_mib": result["rss_loaded"] / MiB,
    }
    if "xla_arguments" in result:
        out["xla_mib"] = (result["xla_arguments"] + result["xla_temporaries"]) / MiB
    return out


def main(argv=None) -> list[dict]:
    a = _args(argv)
    if a.save:
        save_checkpoint(a, a.save)
        print("@@RESULT " + json.dumps({"saved": a.save}), flush=True)
        return []
    if a.one:
        one(a)
        return []
    storages = a.only or STORAGES
    tokens = a.batch * a.seq_len
    sftc_env = {**os.environ, **({"SFTC_MALLOC": "system"} if a.malloc == "system" else {})}
    peer_env = {k: v for k, v in os.environ.items() if k != "SFTC_MALLOC"}
    rows = []
    busy, cpu, started = _busy_seconds(), _own_and_children(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qlora_vs_peft-") as tmp:
        checkpoint = str(Path(tmp) / "base")
        if "peer" in a.sides and any(HOW[s][1] for s in storages):
            saved = _spawn(a, ["--save", checkpoint], peer_env)
            if "error" in saved:
                raise SystemExit(f"could not write the peer's checkpoint: {saved['error']}")
        for storage in storages:
            row = {"storage": storage, "compute": HOW[storage][0]}
            for side in a.sides:  # sftc, then peer: alternating per storage
                extra = ["--one", side, storage] + (["--checkpoint", checkpoint] if side == "peer" else [])
                row[side] = _summary(_spawn(a, extra, sftc_env if side == "sftc" else peer_env), tokens)
                if not a.json:
                    r = row[side]
                    state = (
                        f"error: {r['error']}"
                        if "error" in r
                        else f"{r['step_ms']:.0f} ms/step, peak {r['peak_mib']:,.0f} MiB"
                    )
                    print(f"  {storage:<9} {side:<5} {state}  ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
            s, p = row.get("sftc", {}), row.get("peer", {})
            if "step_ms" in s and "step_ms" in p:
                row["speed_ratio"] = p["step_ms"] / s["step_ms"]  # sftc tokens/s / peer tokens/s
                row["memory_ratio"] = s["peak_mib"] / p["peak_mib"]
            rows.append(row)
    wall = time.perf_counter() - started
    others = None
    if busy is not None:
        others = max(0.0, (_busy_seconds() - busy) - (_own_and_children() - cpu)) / (wall * os.cpu_count())
    machine = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": _version("jax"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "bitsandbytes": _version("bitsandbytes"),
        "sftc_malloc": a.malloc,
        "other_processes_cpu_share": others,
        "wall_s": wall,
    }
    shape = {
        "layers": a.layers,
        **SHAPE,
        "batch": a.batch,
        "micro": a.micro,
        "seq_len": a.seq_len,
        "steps": a.steps,
        "warmup": WARMUP,
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "targets": ["q", "k", "v", "o"]},
    }
    if a.json:
        print(json.dumps({"machine": machine, "shape": shape, "rows": rows}, indent=2))
        return rows
    _print(rows, machine, shape)
    return rows


def _cell(r: dict | None, key: str, fmt: str) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "did not run"
    return format(r[key], fmt)


def _print(rows, machine, shape) -> None:
    print(
        f"model    Llama {shape['layers']} layers, hidden {shape['hidden']}, {shape['heads']}/{shape['kv_heads']} "
        "heads "
        f"of {shape['head_dim']}, ffn {shape['ffn']}, vocab {shape['vocab']}, tied; LoRA r16 a32 on q,k,v,o; AdamW "
        "1e-4; "
        f"batch {shape['batch']} x {shape['seq_len']} (micro {shape['micro']}), median of {shape['steps']} steps "
        f"after {shape['warmup']} warm-up"
    )
    head = (
        "storage",
        "sftc peak MiB",
        "peer peak MiB",
        "sftc ms/step",
        "peer ms/step",
        "sftc/peer speed",
        "memory sftc/peer",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        s, p = row.get("sftc"), row.get("peer")
        speed = f"{row['speed_ratio']:.2f}" if "speed_ratio" in row else "-"
        memory = f"{row['memory_ratio']:.2f}" if "memory_ratio" in row else "-"
        print(
            f"| {row['storage']} ({row['compute']} compute) | {_cell(s, 'peak_mib', ',.0f')} | "
            f"{_cell(p, 'peak_mib', ',.0f')} "
            f"| {_cell(s, 'step_ms', ',.0f')} | {_cell(p, 'step_ms', ',.0f')} | {speed} | {memory} |"
        )
    print()
    print(
        "| storage | side | after load MiB | peak MiB | ms/step (best) | tokens/s | loss first -> last | XLA args + "
        "temps MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    notes: dict[str, list[str]] = {}
    for row in rows:
        for side in ("sftc", "peer"):
            r = row.get(side)
            if r is None:
                continue
            if "error" in r:
                print(f"| {row['storage']} | {side} | did not run: {r['error']} |||||||")
                continue
            xla = (
                f"{r['xla_mib']:,.0f} ({r['xla_arguments'] / MiB:,.0f} + {r['xla_temporaries'] / MiB:,.0f})"
                if "xla_mib" in r
                else ""
            )
            fell = "" if r["loss_last"] < r["loss_first"] else " (did not fall)"
            print(
                f"| {row['storage']} | {side} | {r['loaded_mib']:,.0f} | {r['peak_mib']:,.0f} | {r['step_ms']:,.0f} "
                f"({r['step_ms_min']:,.0f}) | {r['tokens_per_s']:,.0f} | {r['loss_first']:.4f} -> "
                f"{r['loss_last']:.4f}{fell} "
                f"| {xla} |"
            )
            for note in r.get("notes", []):
                notes.setdefault(note, []).append(row["storage"])
    sftc = next((row["sftc"] for row in rows if "sftc" in row and "error" not in row["sftc"]), None)
    peers = [row["peer"] for row in rows if "peer" in row and "error" not in row["peer"]]
    if sftc:
        print(
            f"sftc     {sftc['params']:,} params ({sftc['trainable']:,} trainable), {sftc['device']}, "
            f"malloc {sftc['malloc']}"
        )
    for row in rows:
        if "peer" in row and "error" not in row["peer"]:
            print(
                f"peer     {row['storage']}: base layers {row['peer']['base_layer']}, "
                f"{row['peer']['trainable']:,} trainable"
            )
    for note, where in notes.items():
        print(f"note     peer {', '.join(where)}: {note}")
    m = machine
    threads = f" ({peers[0]['torch_threads']} threads)" if peers else ""
    print(
        f"machine  {m['cpu']}, {m['cores']} cores; python {m['python']}, jax {m['jax']}, torch {m['torch']}{threads}, "
        f"transformers {m['transformers']}, peft {m['peft']}, bitsandbytes {m['bitsandbytes']}"
    )
    share = m["other_processes_cpu_share"]
    if share is not None:
        verdict = "quiet" if share < 0.05 else "NOT quiet: other processes competed for the cores"
        print(
            f"load     other processes used {100 * share:.0f}% of the CPU while this ran ({verdict}); "
            f"{m['wall_s'] / 60:.1f} min in all"
        )
    print(
        "ratios   speed = sftc tokens/s / peer tokens/s (above 1: sftc faster); memory = sftc peak RSS / peer peak RSS"
    )


if __name__ == "__main__":
    main()

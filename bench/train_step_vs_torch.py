"""sftc's train step against transformers + torch, side by side in one process.

The same Llama config and batch trained both ways, float32, AdamW, every token
trained (full rows of random tokens):

* peer: ``transformers.LlamaForCausalLM(LlamaConfig(...))`` (SDPA attention),
  ``torch.optim.AdamW(fused=True)``, gradient clipping at 1.0, ``torch.set_num_threads``
  = the number of CPU cores (JAX's CPU client uses them all too);
* sftc: `runtime.train.throughput` (the jitted step of `runtime.train.step` with the
  optimizer/schedule of a run: AdamW, clipping 1.0, cosine schedule).

Both run in one process under the same glibc malloc settings: by default those
of `runtime.platform.allocator` (freed memory kept for reuse, which speeds up both
sides), or glibc's own with ``--malloc system``. The script also prints how
much CPU other processes took during the timed rounds (/proc/stat minus this
process): on a 2-core machine anything else running slows torch's OpenMP
threads far more than JAX's (a torch step went from ~0.42 s to several seconds
with one other busy process), so only quiet runs compare.

The two are timed in alternating rounds (sftc, torch, sftc, torch, ...) so that
noise from anything else on the machine hits both; each side's number is the
median of its per-step times over all rounds.

    .venv/bin/python bench/train_step_vs_torch.py                 # the issue's ~7M shape
    .venv/bin/python bench/train_step_vs_torch.py --steps 10 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if "--malloc" in sys.argv and sys.argv[sys.argv.index("--malloc") + 1 :][:1] == ["system"]:
    os.environ["SFTC_MALLOC"] = "system"
from runtime.platform import allocator  # noqa: E402

allocator.reuse_freed_memory()  # first thing, for both sides: see runtime.platform.allocator


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds (sftc, torch) after warm-up")
    p.add_argument(
        "--warmup", type=int, default=4, help="untimed steps per side first (default 4: the CPU heap settles)"
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--only", choices=("sftc", "torch"), help="run one side only")
    p.add_argument(
        "--malloc",
        choices=("reuse", "system"),
        default="reuse",
        help="glibc malloc as runtime.platform.allocator tunes it (default, both sides) or as it comes",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def _busy_seconds() -> float | None:
    """CPU seconds all processes have run so far (/proc/stat), None off Linux."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _matmul_probe() -> float:
    """GFLOP/s of a 2048^3 float32 numpy matmul (best of 5): how fast the cores are right now.

    On a shared virtual machine the same code runs at very different speeds when a
    neighbour loads the physical cores (measured here: 356 vs 126 GFLOP/s), which
    /proc/stat does not show; both sides are timed in alternation for that reason."""
    import numpy as np

    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * 2048**3 / best / 1e9


def _own_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Torch:
    """LlamaForCausalLM + AdamW, one full step per `step()` (zero_grad, forward, backward, clip, update)."""

    def __init__(self, a, threads: int):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        config = LlamaConfig(
            vocab_size=a.vocab,
            hidden_size=a.dim,
            intermediate_size=a.ffn,
            num_hidden_layers=a.layers,
            num_attention_heads=a.heads,
            num_key_value_heads=a.kv_heads,
            max_position_embeddings=max(a.seq_len, 2048),
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
        self.model = LlamaForCausalLM(config).float().train()
        self.params = sum(p.numel() for p in self.model.parameters())
        # fused=True: torch's fastest AdamW on CPU (measured ~8 ms/step faster than the default loop here)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True
        )
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1), generator=g)
        self.inputs, self.targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step(self) -> float:
        torch = self.torch
        started = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(input_ids=self.inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        loss.detach().item()
        return time.perf_counter() - started


class Sftc:
    """`runtime.train.throughput.StepBench`: the compiled step of a run, timed in rounds."""

    def __init__(self, a):
        from runtime.models import ModelConfig
        from runtime.train.throughput import StepBench

        config = ModelConfig.llama(
            layers=a.layers, dim=a.dim, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn, vocab=a.vocab
        )
        self.bench = StepBench.for_shape(config, batch=a.batch, seq_len=a.seq_len, dtype="float32")
        self.params = self.bench.params

    def step(self) -> float:
        return self.bench.run(1)[0]


def main(argv=None) -> dict:
    a = _args(argv)
    import jax
    import torch
    import transformers

    tokens = a.batch * a.seq_len
    sides = ("sftc", "torch") if a.only is None else (a.only,)
    times: dict[str, list[float]] = {s: [] for s in sides}
    peers = {}
    for side in sides:
        peers[side] = Sftc(a) if side == "sftc" else Torch(a, a.threads)
        for _ in range(a.warmup):
            peers[side].step()
    probe_before = _matmul_probe()
    busy, own, started = _busy_seconds(), _own_seconds(), time.perf_counter()
    for _ in range(a.rounds):
        for side in sides:
            times[side].extend(peers[side].step() for _ in range(a.steps))
    wall = time.perf_counter() - started
    others = (
        None if busy is None else max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own)) / (wall * os.cpu_count())
    )
    probe_after = _matmul_probe()

    out = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "malloc": allocator.status(),
            "other_processes_cpu_share": others,
            "numpy_matmul_gflops": [probe_before, probe_after],
        },
        "shape": {
            "layers": a.layers,
            "dim": a.dim,
            "heads": a.heads,
            "kv_heads": a.kv_heads,
            "ffn": a.ffn,
            "vocab": a.vocab,
            "batch": a.batch,
            "seq_len": a.seq_len,
            "dtype": "float32",
        },
    }
    for side in sides:
        median = statistics.median(times[side])
        out[side] = {
            "params": peers[side].params,
            "step_ms": median * 1e3,
            "step_ms_min": min(times[side]) * 1e3,
            "tokens_per_s": tokens / median,
            "timed_steps": len(times[side]),
        }
    if "sftc" in sides:
        out["sftc"]["compile_s"] = peers["sftc"].bench.compile_s
    if len(sides) == 2:
        out["ratio"] = out["sftc"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
    if a.json:
        print(json.dumps(out, indent=2))
        return out
    m, s = out["machine"], out["shape"]
    print(
        f"machine  {m['cpu_count']} CPU cores ({m['processor']}), python {m['python']}, jax {m['jax']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}"
    )
    share = m["other_processes_cpu_share"]
    if share is not None:
        verdict = (
            "quiet" if share < 0.05 else "NOT quiet: other processes competed for the cores, numbers are unreliable"
        )
        print(
            f"load     other processes used {100 * share:.0f}% of the CPU during the timed rounds ({verdict}); "
            f"malloc {m['malloc']}"
        )
    probe = m["numpy_matmul_gflops"]
    print(f"cores    numpy 2048^3 float32 matmul {probe[0]:.0f} GFLOP/s before, {probe[1]:.0f} after")
    print(
        f"model    Llama {s['layers']} layers, dim {s['dim']}, {s['heads']}/{s['kv_heads']} heads, ffn {s['ffn']}, "
        f"vocab {s['vocab']}; batch {s['batch']} x {s['seq_len']}, float32, AdamW"
    )
    for side in sides:
        r = out[side]
        name = "sftc (jax)" if side == "sftc" else "torch"
        print(
            f"{name:<11}{r['params']:>10,} params  {r['step_ms']:7.1f} ms/step (best {r['step_ms_min']:.1f})  "
            f"{r['tokens_per_s']:8,.0f} tokens/s  [{r['timed_steps']} steps]"
        )
    if "ratio" in out:
        print(f"ratio      sftc / torch tokens/s = {out['ratio']:.2f}")
    return out


if __name__ == "__main__":
    main()

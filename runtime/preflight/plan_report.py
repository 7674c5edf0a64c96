"""`sftc plan`: what a run will do, before anything is allocated on a device.

Model size, data counts (rows, drops, truncations, packing efficiency), steps and
tokens, the mesh and how the main tensors are sharded on it, an estimate of the
memory per device (parameters, gradients, optimizer state, activations) against
the memory the devices have, and the FLOPs. Estimates are labelled as such.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from runtime.models.config import ModelConfig
from runtime.models.flops import flops_per_token
from runtime.plan.run_plan import Plan
from runtime.plan.settings import AdamW, Constant, Lion, Optimizer, Sgd
from runtime.platform import mesh as meshlib

if TYPE_CHECKING:
    from runtime.data.stats import DataStats

GiB = 2**30


def parameter_count(config: ModelConfig) -> dict[str, int]:
    """Parameters by part, from the config alone (matches the built model)."""
    d, h, kv, hd, f, v, n = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.intermediate_size,
        config.vocab_size,
        config.num_layers,
    )
    attention = d * h * hd + 2 * d * kv * hd + h * hd * d
    if config.qkv_bias:
        attention += h * hd + 2 * kv * hd
    if config.o_bias:
        attention += d
    if config.qk_norm:
        attention += 2 * hd
    mlp = 3 * d * f + (2 * f + d if config.mlp_bias else 0)
    layers = n * (attention + mlp + 2 * d)
    embed = v * d
    head = 0 if config.tie_embeddings else v * d
    projections = n * (
        d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f
    )  # the kernels a quantized base stores quantized
    return {
        "embedding": embed,
        "layers": layers,
        "head": head,
        "norm": d,
        "total": embed + layers + head + d,
        "projections": projections,
    }


def projection_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """The ``[in, out]`` kernels of one layer's block projections (q k v o gate up down): what a
    quantized base stores quantized, its blocks along ``in`` (`runtime.models.quantize`)."""
    d, h, kv, hd, f = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.intermediate_size,
    )
    return [(d, h * hd), (d, kv * hd), (d, kv * hd), (h * hd, d), (d, f), (d, f), (f, d)]


def optimizer_bytes(optimizer: Optimizer, config: ModelConfig, params: int) -> int:
    if isinstance(optimizer, AdamW):
        return 2 * 4 * params
    if isinstance(optimizer, Lion):
        return 4 * params
    if isinstance(optimizer, Sgd):
        return 4 * params if optimizer.momentum else 0
    # adafactor: row and column statistics per matrix, full statistics for vectors
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    per_layer = 4 * 2 * d + 2 * (d + config.num_kv_heads * config.head_dim) + 3 * (d + f)
    return 4 * (config.num_layers * per_layer + 2 * (v + d))


def activation_bytes(config: ModelConfig, tokens: int, seq_len: int, remat: str, compute_bytes: int) -> int:
    """Saved activations of one micro-batch on one device (estimate)."""
    d, f = config.hidden_size, config.intermediate_size
    kv = config.num_kv_heads * config.head_dim
    per_token_layer = (6 * d + 2 * kv + 3 * f + config.num_heads * seq_len) * compute_bytes
    if remat == "full":
        per_token_layer = d * compute_bytes
    elif remat == "dots":
        per_token_layer = (2 * d + 2 * kv + 2 * f) * compute_bytes
    layers = config.num_layers * tokens * per_token_layer
    logits = 2 * tokens * config.vocab_size * 4
    return int(layers + logits)


def memory_estimate(
    config: ModelConfig,
    *,
    trainable: int,
    total_params: int,
    dtype: str,
    optimizer: Optimizer,
    micro_tokens: int,
    seq_len: int,
    remat: str,
    shard: int = 1,
    tensor: int = 1,
    quantize: str | None = None,
) -> dict[str, float]:
    """Bytes per device of one train step, by part (the one estimate `sftc plan` prints and
    `bench/memory_plan.py` checks against XLA's own accounting of the compiled step).

    ``micro_tokens``: tokens of one micro-batch on one device; ``shard``: fsdp x tensor (what
    divides the parameters); ``tensor``: what divides the activations; ``quantize``: how a LoRA
    run's frozen block projections are stored (plus one layer's kernel dequantized at a time)."""
    from runtime.models.quantize import bytes_per_weight

    compute_bytes = 2 if dtype == "bfloat16" else 4
    frozen = total_params - trainable  # kept in the compute dtype; the trainable part has a float32 master
    frozen_b = frozen * compute_bytes
    if quantize is not None:  # each projection's bytes by its input width (nf4's block depends on it)
        stored = sum(
            din * dout * (bytes_per_weight(quantize, compute_bytes, din) - compute_bytes)
            for din, dout in projection_shapes(config)
        )
        largest = config.hidden_size * max(config.intermediate_size, config.num_heads * config.head_dim)
        frozen_b += config.num_layers * stored + largest * compute_bytes
    params_b = (trainable * 4 + frozen_b + (trainable * compute_bytes if compute_bytes == 2 else 0)) / shard
    grads_b = trainable * 4 / shard
    opt_b = optimizer_bytes(optimizer, config, trainable) / shard
    act_b = activation_bytes(config, micro_tokens, seq_len, remat, compute_bytes) / max(tensor, 1)
    return {
        "params": params_b,
        "grads": grads_b,
        "optimizer": opt_b,
        "activations": act_b,
        "total": params_b + grads_b + opt_b + act_b,
    }


def memory_advice(
    config: ModelConfig,
    limit: int,
    *,
    batch: int,
    micro: int,
    parallel: int,
    devices: int,
    fsdp: int,
    tensor: int,
    dtype: str,
    remat: str,
    lora: bool = False,
    **estimate_args,
) -> list[str]:
    """When the estimate exceeds ``limit``: each single setting that would make it fit, with the
    estimate it gives (the smallest change of each kind), or what no single setting can fix."""

    def total(**changes) -> float:
        args = dict(
            estimate_args,
            dtype=dtype,
            remat=remat,
            shard=fsdp * tensor,
            tensor=tensor,
            micro_tokens=micro // parallel * estimate_args["seq_len"],
        )
        args.update(changes)
        return memory_estimate(config, **args)["total"]

    advice = []
    seq_len = estimate_args["seq_len"]
    for smaller in range(micro - parallel, 0, -parallel):
        if batch % smaller == 0 and total(micro_tokens=smaller // parallel * seq_len) <= limit:
            advice.append(
                f"`micro = {smaller}` (accumulation {batch // smaller}) would need "
                f"{total(micro_tokens=smaller // parallel * seq_len) / GiB:.2f} GiB"
            )
            break
    if remat != "full" and total(remat="full") <= limit:
        advice.append(f"`remat = full` would need {total(remat='full') / GiB:.2f} GiB")
    if dtype == "float32" and total(dtype="bfloat16") <= limit:
        advice.append(f"`dtype = bfloat16` would need {total(dtype='bfloat16') / GiB:.2f} GiB")
    if lora:
        smaller_bases = {None: ("int8", "nf4"), "int8": ("nf4",)}.get(estimate_args.get("quantize"), ())
        for kind in smaller_bases:  # the least lossy that fits
            if total(quantize=kind) <= limit:
                advice.append(f"`quantize = {kind}` would need {total(quantize=kind) / GiB:.2f} GiB")
                break
    for more in range(fsdp + 1, devices + 1):
        if devices % (more * tensor) == 0 and total(shard=more * tensor) <= limit:
            advice.append(f"`mesh = (fsdp = {more}, ...)` would need {total(shard=more * tensor) / GiB:.2f} GiB")
            break
    if not advice:
        least = total(micro_tokens=seq_len, remat="full", dtype="bfloat16", shard=devices)
        advice.append(
            f"no single setting fits: even `micro = {parallel}`, `remat = full`, `dtype = bfloat16` and "
            f"fsdp over all {devices} devices need {least / GiB:.2f} GiB; use more devices or a smaller "
            "model (or LoRA, over a quantized base)"
        )
    return advice


def device_memory() -> tuple[int | None, str]:
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), device.device_kind
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), f"{device.platform} host memory"
    except (ValueError, OSError):
        return None, device.platform


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{' ' if unit else ''}{suffix}{unit}"
    return f"{n:.0f}{' ' if unit else ''}{unit}"


def plan_report(plan: Plan, config: ModelConfig, stats: DataStats, as_dict: bool = False) -> Any:
    """What `sftc plan` shows of a decided plan, its model's config and its data's counts."""
    import jax

    counts = parameter_count(config)
    total_params = counts["total"]
    trainable = total_params
    if plan.model.adapter is not None:
        from runtime.models.lora import count_lora_params

        trainable = count_lora_params(config, plan.model.adapter)
        total_params += trainable
    devices = jax.device_count()
    shape = meshlib.mesh_shape(plan.train.mesh, devices)
    mesh = meshlib.make_mesh(shape)
    parallel = shape["data"] * shape["fsdp"]
    estimate = memory_estimate(
        config,
        trainable=trainable,
        total_params=total_params,
        dtype=plan.model.dtype,
        optimizer=plan.train.optimizer,
        micro_tokens=plan.train.micro // parallel * plan.data.seq_len,
        seq_len=plan.data.seq_len,
        remat=plan.train.remat,
        shard=shape["fsdp"] * shape["tensor"],
        tensor=shape["tensor"],
        quantize=plan.model.quantize,
    )
    limit, memory_kind = device_memory()
    advice = []
    if limit and estimate["total"] > limit:
        advice = memory_advice(
            config,
            limit,
            batch=plan.data.global_batch_size,
            micro=plan.train.micro,
            parallel=parallel,
            devices=devices,
            fsdp=shape["fsdp"],
            tensor=shape["tensor"],
            dtype=plan.model.dtype,
            remat=plan.train.remat,
            trainable=trainable,
            total_params=total_params,
            optimizer=plan.train.optimizer,
            seq_len=plan.data.seq_len,
            lora=plan.model.adapter is not None,
            quantize=plan.model.quantize,
        )
    tokens_per_step = plan.data.global_batch_size * plan.data.seq_len
    step_flops = flops_per_token(config, total_params, plan.data.seq_len) * tokens_per_step
    steps = plan.train.steps
    per_epoch = stats.steps_per_epoch or 0
    example_tensors = {
        "embed.embedding": (("vocab", "embed"), (config.vocab_size, config.hidden_size)),
        "attn.q.kernel": (("embed", "heads"), (config.hidden_size, config.num_heads * config.head_dim)),
        "mlp.up.kernel": (("embed", "mlp"), (config.hidden_size, config.intermediate_size)),
        "batch": (("batch", "length"), (plan.train.micro, plan.data.seq_len)),
    }
    shardings = {name: str(meshlib.spec_for(names, dims, mesh)) for name, (names, dims) in example_tensors.items()}
    report = {
        "name": plan.name,
        "model": {
            "architecture": config.model_type,
            "layers": config.num_layers,
            "dim": config.hidden_size,
            "heads": config.num_heads,
            "kv_heads": config.num_kv_heads,
            "vocab": config.vocab_size,
            "params": total_params,
            "trainable": trainable,
            "dtype": plan.model.dtype,
            "quantize": plan.model.quantize,
            "source": plan.model.path if plan.model.kind == "hf" else "init",
        },
        "data": stats.to_dict(),
        "steps": steps,
        "epochs": steps / per_epoch if per_epoch else None,
        "tokens_per_step": tokens_per_step,
        "warmup_steps": plan.train.schedule.warmup_steps,
        "accumulation": plan.accumulation,
        "mesh": shape,
        "shardings": shardings,
        "memory_per_device": {**estimate, "available": limit},
        "memory_advice": advice,
        "flops_per_step": step_flops,
        "flops_total": step_flops * steps,
        "gates": [g.text + f" {g.op} {g.threshold:g}" for g in plan.gates],
        "baseline": _baseline_text(plan),
    }
    if as_dict:
        return report
    return _render(report, plan, stats, memory_kind)


def _baseline_text(plan) -> str | None:
    baseline = plan.eval.baseline
    if baseline is None:
        return None
    return (
        "the base model"
        if baseline.kind == "base"
        else f"the base model given {baseline.k} training examples (few-shot)"
    )


def _render(r: dict, plan, stats, memory_kind: str) -> str:
    m, mem = r["model"], r["memory_per_device"]
    tuning = "full fine-tune" if plan.model.adapter is None else f"LoRA rank {plan.model.adapter.rank}"
    if plan.model.quantize is not None:
        tuning += f" over an {plan.model.quantize} base"
    lines = [
        f"model    {m['architecture']} {_human(m['params'])} ({m['layers']} layers, dim {m['dim']}, "
        f"{m['heads']} heads / {m['kv_heads']} kv, vocab {m['vocab']:,})   {tuning}, {m['dtype']}",
        f"         trainable {m['trainable']:,} of {m['params']:,} parameters   from {m['source']}",
    ]
    lines += stats.summary().splitlines()[:2] + stats.source_lines() + stats.audit_lines()
    epochs = f"{r['epochs']:.1f} epochs" if r["epochs"] else "?"
    lines.append(
        f"steps    {r['steps']:,} ({epochs})   {plan.data.global_batch_size} seq x {plan.data.seq_len} tok "
        f"= {r['tokens_per_step']:,} tok/step"
        f"   warmup {r['warmup_steps']}   accumulation {r['accumulation']}"
    )
    o, schedule = plan.train.optimizer, plan.train.schedule
    rate = f"lr {o.lr:g}" if isinstance(schedule, Constant) else f"lr {o.lr:g} -> {schedule.min_lr:g}"
    lines.append(
        f"optim    {o.name} {rate} ({schedule.name})   "
        f"clip {plan.train.clip if plan.train.clip is not None else 'off'}   "
        + "   ".join(f"{k} {v}" for k, v in o.arguments().items() if k != "lr")
    )
    shape = r["mesh"]
    count = shape["data"] * shape["fsdp"] * shape["tensor"]
    lines.append(
        f"mesh     {count} device{'s' * (count != 1)}: "
        f"data {shape['data']} x fsdp {shape['fsdp']} x tensor {shape['tensor']}"
    )
    lines.append("         " + "   ".join(f"{k} {v}" for k, v in r["shardings"].items()))
    available = f" of {mem['available'] / GiB:.1f} GiB {memory_kind}" if mem["available"] else ""
    lines.append(
        f"memory   {mem['total'] / GiB:.3f} GiB/device "
        f"(params {mem['params'] / GiB:.3f}, grads {mem['grads'] / GiB:.3f}, "
        f"optimizer {mem['optimizer'] / GiB:.3f}, activations {mem['activations'] / GiB:.3f}; estimate){available}"
    )
    if r["memory_advice"]:
        lines.append(
            "[bold red]warning[/]: the estimate exceeds the device's memory; "
            + (
                "what no single setting fixes:"
                if r["memory_advice"][0].startswith("no single")
                else "any one of these fits:"
            )
        )
        lines += [f"         {line}" for line in r["memory_advice"]]
    lines.append(f"compute  {_human(r['flops_per_step'], 'FLOP')}/step, {_human(r['flops_total'], 'FLOP')} in total")
    if r["baseline"]:
        lines.append(f"compare  with {r['baseline']} on the same eval rows (cached after the first run)")
    bench = plan.eval.benchmarks
    if bench is not None:
        scope = f"the first {bench.limit} documents" if bench.limit else "all documents"
        shots = f"{bench.num_fewshot}-shot" if bench.num_fewshot is not None else "each task's few-shot setting"
        models = "the tuned model and the base" if plan.eval.baseline is not None else "the tuned model"
        lines.append(
            f"bench    lm_eval {', '.join(bench.tasks)}: {scope}, {shots}, on {models} after training"
            + (f" (tasks from {bench.include})" if bench.include else "")
        )
    gates = ", ".join(g.text for g in (*plan.gates, *plan.data_gates)) or "nothing (no `accept` block)"
    total_tokens = r["tokens_per_step"] * r["steps"]
    lines.append(f"[bold]Plan:[/] {r['steps']:,} steps over {_human(total_tokens)} tokens; accept on {gates}.")
    return "\n".join(lines)

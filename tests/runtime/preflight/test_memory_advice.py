"""When `sftc plan`'s memory estimate exceeds the device, it names each single setting that
would fit and the estimate it gives; what it says is computed by the same estimate."""

from __future__ import annotations

import pytest

from runtime.models import ModelConfig
from runtime.plan.settings import AdamW
from runtime.preflight.plan_report import GiB, memory_advice, memory_estimate

CONFIG = ModelConfig.llama(layers=4, dim=256, heads=8, kv_heads=4, ffn=688, vocab=8192)
PARAMS = 7_096_576
ARGS = dict(trainable=PARAMS, total_params=PARAMS, optimizer=AdamW(lr=1e-3), seq_len=256)


def _estimate(micro: int, **changes) -> float:
    args = dict(ARGS, dtype="float32", remat="off", micro_tokens=micro * 256)
    args.update(changes)
    return memory_estimate(CONFIG, **args)["total"]


def test_the_largest_micro_batch_that_fits_and_the_other_single_settings():
    limit = (_estimate(16) + _estimate(32)) / 2  # micro 32 does not fit; 16 does
    advice = memory_advice(
        CONFIG, limit, batch=64, micro=32, parallel=1, devices=1, fsdp=1, tensor=1, dtype="float32", remat="off", **ARGS
    )
    assert advice[0] == f"`micro = 16` (accumulation 4) would need {_estimate(16) / GiB:.2f} GiB"
    assert f"`remat = full` would need {_estimate(32, remat='full') / GiB:.2f} GiB" in advice
    assert all(float(line.split("need ")[1].split()[0]) * GiB <= limit + 0.01 * GiB for line in advice)


def test_fsdp_over_more_devices_and_nothing_that_fits():
    sharded = memory_advice(
        CONFIG,
        _estimate(1, shard=2) * 1.01,
        batch=8,
        micro=2,
        parallel=2,
        devices=4,
        fsdp=1,
        tensor=1,
        dtype="bfloat16",
        remat="full",
        **ARGS,
    )
    assert any(line.startswith("`mesh = (fsdp = 2, ...)`") for line in sharded)
    hopeless = memory_advice(
        CONFIG, 2**20, batch=8, micro=8, parallel=1, devices=1, fsdp=1, tensor=1, dtype="float32", remat="off", **ARGS
    )
    assert len(hopeless) == 1 and hopeless[0].startswith("no single setting fits: even `micro = 1`")


def test_sftc_plan_prints_what_fits_when_the_estimate_exceeds_the_device(monkeypatch, tmp_path, capsys):
    from pathlib import Path

    from sftlang.cli import main

    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("runtime.preflight.plan_report.device_memory", lambda: (40 * 2**20, "test memory"))
    spec = Path(__file__).resolve().parents[3] / "specs" / "shapes-alpaca.sft"
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "the estimate exceeds the device's memory; any one of these fits:" in text
    assert "`micro = 4` (accumulation 2) would need" in text


def test_a_quantized_base_shrinks_the_frozen_weights_and_is_advised_for_lora():
    from runtime.models.lora import count_lora_params
    from runtime.plan.run_plan import LoraPlan
    from runtime.preflight.plan_report import parameter_count

    trainable = count_lora_params(CONFIG, LoraPlan(16, 32, 0.0, ("q", "k", "v", "o")))
    lora = dict(ARGS, trainable=trainable, total_params=PARAMS + trainable)
    projections = parameter_count(CONFIG)["projections"]
    assert projections == 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 688)  # q o, k v, gate up down

    def params(quantize):
        return memory_estimate(CONFIG, **lora, dtype="bfloat16", remat="off", micro_tokens=256, quantize=quantize)[
            "params"
        ]

    largest = 256 * 688 * 2  # one layer's kernel, dequantized while it runs
    assert params("int8") == params(None) - projections * 1 + largest
    down = 4 * 688 * 256  # 688 inputs: nf4 blocks of 43 (the largest below 64 that divides 688)
    assert params("nf4") == pytest.approx(
        params(None) - (projections - down) * (2 - 0.5 - 2 / 64) - down * (2 - 0.5 - 2 / 43) + largest, rel=1e-12
    )
    limit = (
        memory_estimate(CONFIG, **lora, dtype="bfloat16", remat="full", micro_tokens=256, quantize="nf4")["total"]
        + memory_estimate(CONFIG, **lora, dtype="bfloat16", remat="full", micro_tokens=256, quantize="int8")["total"]
    ) / 2
    advice = memory_advice(
        CONFIG,
        limit,
        batch=1,
        micro=1,
        parallel=1,
        devices=1,
        fsdp=1,
        tensor=1,
        dtype="bfloat16",
        remat="full",
        lora=True,
        **lora,
    )
    need = memory_estimate(CONFIG, **lora, dtype="bfloat16", remat="full", micro_tokens=256, quantize="nf4")["total"]
    assert advice == [f"`quantize = nf4` would need {need / GiB:.2f} GiB"]
    # a full fine-tune is never told to quantize its (trained) base
    assert not any(
        "`quantize =" in line
        for line in memory_advice(
            CONFIG,
            limit,
            batch=1,
            micro=1,
            parallel=1,
            devices=1,
            fsdp=1,
            tensor=1,
            dtype="bfloat16",
            remat="full",
            **lora,
        )
    )

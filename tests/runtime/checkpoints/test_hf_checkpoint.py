"""Hugging Face import/export: round trips through transformers, shards, legacy configs, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from runtime.checkpoints.hf_checkpoint import (
    CheckpointError,
    load_pretrained,
    parse_size,
    resolve_checkpoint,
    save_pretrained,
)
from runtime.models import ModelConfig, build, forward

IDS = np.random.RandomState(7).randint(3, 256, size=(2, 11))


def _torch_logits(model, ids=IDS):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


@pytest.mark.parametrize("case", ["llama31", "llama_bias", "qwen2", "qwen3", "smollm2", "mistral"])
def test_export_round_trip_loads_in_transformers(case, hf_checkpoint, tmp_path):
    directory, torch_model = hf_checkpoint(case)
    model, config = load_pretrained(directory)
    out = save_pretrained(model, config, tmp_path / "export")
    assert (out / "config.json").is_file() and (out / "generation_config.json").is_file()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert type(reloaded) is type(torch_model)
    # the exported weights are bit-identical to the originals
    original = torch_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    np.testing.assert_array_equal(_torch_logits(reloaded), _torch_logits(torch_model))
    # and our own re-import of the export gives the same logits as before
    again, config2 = load_pretrained(out)
    assert config2.replace(attention_impl=config.attention_impl) == config
    np.testing.assert_array_equal(np.asarray(forward(again, IDS)), np.asarray(forward(model, IDS)))


def test_sharded_import_and_export(hf_checkpoint, tmp_path):
    directory, torch_model = hf_checkpoint("qwen3")
    sharded = tmp_path / "sharded"
    torch_model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    model, config = load_pretrained(sharded)
    ref, _ = load_pretrained(directory)
    np.testing.assert_array_equal(np.asarray(forward(model, IDS)), np.asarray(forward(ref, IDS)))

    out = save_pretrained(model, config, tmp_path / "export", max_shard_size="100KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((out / f).is_file() for f in files)
    assert not (out / "model.safetensors").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    np.testing.assert_array_equal(_torch_logits(reloaded), _torch_logits(torch_model))


def test_legacy_config_json_is_read(hf_checkpoint, tmp_path):
    """Pre-transformers-5 files: top-level rope_theta / rope_scaling (with "type") / torch_dtype."""
    directory, torch_model = hf_checkpoint("llama31")
    legacy = tmp_path / "legacy"
    shutil.copytree(directory, legacy)
    cfg = json.loads((legacy / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg.pop("dtype", None)
    cfg["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    cfg["rope_scaling"] = rope
    cfg["torch_dtype"] = "float32"
    (legacy / "config.json").write_text(json.dumps(cfg))
    model, config = load_pretrained(legacy)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling_dict["rope_type"] == "llama3"
    np.testing.assert_allclose(np.asarray(forward(model, IDS)), _torch_logits(torch_model), atol=1e-4, rtol=0)


def test_bf16_export_and_fresh_model_export(tmp_path):
    config = ModelConfig.llama(layers=2, dim=64, heads=4, kv_heads=2, ffn=96, vocab=128)
    model = build(config, rngs=3, dtype="bfloat16")
    out = save_pretrained(
        model, config, tmp_path / "fresh", generation_config={"do_sample": True, "temperature": 0.7, "top_p": 0.9}
    )
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert (generation.do_sample, generation.temperature, generation.top_p) == (True, 0.7, 0.9)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.dtype == torch.bfloat16
    embed = reloaded.model.embed_tokens.weight.detach().float().numpy()
    np.testing.assert_array_equal(embed, np.asarray(model.embed.embedding[...], np.float32))


def _copy_checkpoint(hf_checkpoint, tmp_path, case="llama"):
    directory, _ = hf_checkpoint(case)
    target = tmp_path / "ckpt"
    shutil.copytree(directory, target)
    return target


def test_unsupported_model_type_is_a_clear_error(hf_checkpoint, tmp_path):
    target = _copy_checkpoint(hf_checkpoint, tmp_path)
    cfg = json.loads((target / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (target / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model_type 'gpt2' is not supported.*llama"):
        load_pretrained(target)


def test_missing_and_misshaped_tensors_are_named(hf_checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file

    target = _copy_checkpoint(hf_checkpoint, tmp_path)
    tensors = load_file(target / "model.safetensors")
    name = "model.layers.1.self_attn.k_proj.weight"

    missing = dict(tensors)
    del missing[name]
    save_file(missing, target / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"tensor '{name}' is missing"):
        load_pretrained(target)

    wrong = dict(tensors)
    wrong[name] = np.zeros((16, 64), np.float32)
    save_file(wrong, target / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' has shape \(16, 64\).*\(32, 64\)"):
        load_pretrained(target)

    extra = dict(tensors)
    extra["model.layers.0.self_attn.q_norm.weight"] = np.ones(16, np.float32)
    save_file(extra, target / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="does not use, e.g. model.layers.0.self_attn.q_norm.weight"):
        load_pretrained(target)


def test_pickled_weights_are_refused_with_conversion_advice(hf_checkpoint, tmp_path):
    target = _copy_checkpoint(hf_checkpoint, tmp_path)
    (target / "model.safetensors").unlink()
    (target / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(CheckpointError, match=r"pickled.*refused.*save_pretrained"):
        load_pretrained(target)


def test_not_a_directory_or_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no such directory"):
        load_pretrained(tmp_path / "nope" / "deeper")


def test_offline_hub_id_fails_with_a_message_not_a_traceback(tmp_path):
    code = (
        "from runtime.checkpoints.hf_checkpoint import load_pretrained\n"
        "load_pretrained('sftc-test-org/no-such-model-xyz')\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(__import__("pathlib").Path(__file__).parents[3]),
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "runtime.checkpoints.hf_checkpoint.CheckpointError: cannot load 'sftc-test-org/no-such-model-xyz'"
    )
    assert "HF_HUB_OFFLINE is set" in last and "hf download" in last
    # in-process as well
    import os

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
            load_pretrained("sftc-test-org/no-such-model-xyz")
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MiB") == 500 * 2**20
    assert parse_size(123) == 123
    with pytest.raises(ValueError):
        parse_size("lots")


def test_a_missing_local_path_names_what_was_looked_for_and_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for path in ("models/SmolLM2-135M-Instruct", "./SmolLM2", str(tmp_path / "a" / "b")):
        with pytest.raises(CheckpointError) as caught:
            resolve_checkpoint(path)
        message = str(caught.value)
        assert "no such directory: looked for " + str(tmp_path) in message, message
        assert "hf download" not in message

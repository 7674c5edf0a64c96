"""Shared fixtures for the model / HF / tokenizer tests: tiny random transformers checkpoints.

Each case is a real transformers config class, with weights re-drawn at a
scale where a wrong rope, mask or norm changes the logits far beyond the 1e-4
tolerance, saved with ``save_pretrained`` (no hub access).
"""

from __future__ import annotations

import pytest

TINY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# name -> (transformers config class, overrides)
ARCH_CASES = {
    "llama": ("LlamaConfig", dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "llama31": (
        "LlamaConfig",
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        ),
    ),
    "llama_linear": (
        "LlamaConfig",
        dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
    ),
    "llama_bias": ("LlamaConfig", dict(attention_bias=True, mlp_bias=True, head_dim=8)),
    "mistral": (
        "MistralConfig",
        dict(sliding_window=5, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    ),
    "qwen2": (
        "Qwen2Config",
        dict(
            use_sliding_window=True,
            sliding_window=5,
            max_window_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    ),
    "qwen3": ("Qwen3Config", dict(head_dim=32, rms_norm_eps=1e-6)),
    "smollm2": ("LlamaConfig", dict(tie_word_embeddings=True, num_key_value_heads=1)),
}


def make_torch_model(case: str, seed: int = 0):
    import torch
    import transformers

    # The reference models are tiny: one thread, or torch's thread pool fights XLA's for the
    # 2 cores (measured: a 64x96 linear went from ~0.1 ms to 12 ms once JAX had run).
    torch.set_num_threads(1)
    cls_name, overrides = ARCH_CASES[case]
    config = getattr(transformers, cls_name)(**{**TINY, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """``hf_checkpoint(case) -> (directory, torch_model)``; built once per session."""
    built: dict = {}

    def get(case: str):
        if case not in built:
            model = make_torch_model(case)
            directory = tmp_path_factory.mktemp(f"hf_{case}")
            model.save_pretrained(directory)
            built[case] = (directory, model)
        return built[case]

    return get


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """The tiny `sftc run` project of run_helpers, as the working directory, with its own cache."""
    from tests.runtime.run_helpers import write_project

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    return write_project(tmp_path)

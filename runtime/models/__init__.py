"""Llama-family decoder (Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3, SmolLM2) in Flax NNX.

Public API::

    from runtime.models import ModelConfig, build, generate, Sampling
    config = ModelConfig.llama(layers=4, dim=256, heads=8, kv_heads=4, ffn=688, vocab=8192)
    model = build(config, rngs=0, dtype="float32")       # fresh random weights
    logits = model(input_ids)                            # [B, L] -> [B, L, V] float32
    new_tokens = generate(model, [[1, 5, 9]], max_new_tokens=20, eos_ids=[2])

Checkpoints from/to Hugging Face: `runtime.checkpoints.hf_checkpoint.load_pretrained` / `save_pretrained`.
"""

from runtime.models.config import ARCHITECTURES, ModelConfig, UnsupportedModelError
from runtime.models.decode import GREEDY, Sampling, generate, generate_many, generate_padded, stream
from runtime.models.transformer import KVCache, Transformer, build, forward, init_cache

__all__ = [
    "ARCHITECTURES",
    "GREEDY",
    "KVCache",
    "ModelConfig",
    "Sampling",
    "Transformer",
    "UnsupportedModelError",
    "build",
    "forward",
    "generate",
    "generate_many",
    "generate_padded",
    "init_cache",
    "stream",
]

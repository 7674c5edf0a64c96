"""Model FLOPs of a training step, shared by `sftc plan` and `sftc bench` (see runtime.train.throughput's
docstring for the convention). Importing this module has no side effects.
"""

from __future__ import annotations

from runtime.models.config import ModelConfig


def matmul_params(config: ModelConfig, params: int) -> int:
    """Parameters that take part in a matmul: all but the input embedding and the norm scales."""
    c = config
    norms = (2 * c.num_layers + 1) * c.hidden_size + (2 * c.num_layers * c.head_dim if c.qk_norm else 0)
    embedding = 0 if c.tie_embeddings else c.vocab_size * c.hidden_size
    return params - norms - embedding


def flops_per_token(config: ModelConfig, params: int, seq_len: int) -> float:
    """Model FLOPs of forward + backward per trained token (see the module docstring)."""
    c = config
    attention = 6 * c.num_layers * seq_len * c.num_heads * c.head_dim
    return 6.0 * matmul_params(config, params) + attention

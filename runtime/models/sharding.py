"""Logical axis names for parameters and activations.

Every parameter carries its logical axes as ``out_sharding`` metadata (read it
with ``nnx.get_partition_spec(state)`` inside ``nnx.logical_axis_rules(rules)``),
and key activations pass through `constrain`. The mapping from logical names to
mesh axes is data owned by the mesh code, e.g.::

    rules = (("batch", ("data", "fsdp")), ("length", None), ("embed", "fsdp"),
             ("heads", "tensor"), ("kv_heads", "tensor"), ("head_dim", None),
             ("mlp", "tensor"), ("vocab", "tensor"))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(nnx.state(model))   # PartitionSpecs over mesh axes
        ...

The rules must name every axis in `LOGICAL_AXES` (``None`` = replicated):
flax passes unknown logical names through as mesh axis names.

Without a mesh, or without rules, `constrain` is the identity, so the model
runs unchanged on one device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
from flax import nnx
from flax.core import spmd as core_spmd

__all__ = ["LOGICAL_AXES", "constrain", "partitioned"]

# batch, length: activation axes; the rest name parameter (and activation) dimensions.
# "heads"/"kv_heads" also name the flattened heads*head_dim dimension of 2-D kernels.
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab")


def partitioned(init: Callable, names: Sequence[str | None]) -> Callable:
    """Wrap an initializer so the parameter records its logical axis names.

    Sharding is not applied eagerly: logical names only become mesh axes once
    rules exist (see the module docstring).
    """
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names; identity without a mesh or rules.

    A mesh axis is used at most once (the first dimension that asks for it keeps
    it: with ``batch -> (data, fsdp)`` and ``embed -> fsdp`` an activation
    ``[tokens, embed]`` is sharded over tokens only), and a dimension whose size
    does not divide over its mesh axes stays replicated.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    rules = dict(core_spmd.get_logical_axis_rules())
    if not rules:
        return x
    used: set[str] = set()
    spec = []
    for name, size in zip(names, x.shape):
        axes = rules.get(name) if name is not None else None
        flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        flat = tuple(a for a in flat if a in mesh.axis_names and a not in used)
        if not flat or size % math.prod(mesh.shape[a] for a in flat):
            spec.append(None)
            continue
        used.update(flat)
        spec.append(flat[0] if len(flat) == 1 else flat)
    return jax.lax.with_sharding_constraint(x, jax.P(*spec))

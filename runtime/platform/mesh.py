"""The device mesh and the sharding rules, as data.

Axes: `data` (replicas), `fsdp` (data parallel with parameters sharded), `tensor`
(model parallel). Model code names its dimensions logically (runtime.models.sharding);
RULES maps those names to mesh axes, MaxText style. A dimension whose size does not
divide over its mesh axes stays replicated rather than failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from runtime.plan.sftc_error import SftcError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axes (None: replicated)
RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


class MeshError(SftcError, ValueError):
    """The mesh asked for does not fit the devices present."""


def mesh_shape(requested: Mapping[str, int | str], devices: int) -> dict[str, int]:
    """Sizes of (data, fsdp, tensor) with one `auto` axis filled from the device count."""
    sizes = {axis: requested.get(axis, 1) for axis in AXES}
    autos = [axis for axis, size in sizes.items() if size == "auto"]
    fixed = math.prod(size for size in sizes.values() if size != "auto")
    if len(autos) > 1:
        raise MeshError(f"only one mesh axis may be `auto`, not {', '.join(autos)}")
    if autos:
        if devices % fixed:
            raise MeshError(f"the mesh's fixed axes need a multiple of {fixed} devices; {devices} are present")
        sizes[autos[0]] = devices // fixed
    elif fixed != devices:
        raise MeshError(f"the mesh (data x fsdp x tensor = {fixed}) does not cover the {devices} devices present")
    return {axis: int(size) for axis, size in sizes.items()}


def make_mesh(shape: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
    sizes = tuple(shape[axis] for axis in AXES)
    if devices is None:
        return jax.make_mesh(sizes, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))
    return jax.sharding.Mesh(
        np.asarray(devices).reshape(sizes), AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES)
    )


def _axis_size(mesh: jax.sharding.Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def spec_for(names, shape, mesh: jax.sharding.Mesh, rules=RULES) -> jax.P:
    """PartitionSpec of an array whose dimensions carry logical `names`."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name, size in zip(names, shape):
        axes = table.get(name) if name is not None else None
        flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        if not flat or size % _axis_size(mesh, flat) or used & set(flat):
            out.append(None)
            continue
        used |= set(flat)
        out.append(flat[0] if len(flat) == 1 else flat)
    return jax.P(*out)


def logical_names(state: nnx.State) -> dict:
    """The pure-dict tree of `state` with each array replaced by its logical axis names. A
    quantized kernel (a qwix QArray) gives its names to each of its arrays: codes and scales."""
    tree = nnx.to_pure_dict(state)
    for path, variable in nnx.to_flat_state(state):
        names = variable.get_metadata().get("out_sharding")
        names = tuple(names) if names else (None,) * len(variable.shape)
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = jax.tree.map(lambda _, names=names: names, variable.get_value())
    return tree


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh, rules=RULES) -> dict:
    """NamedShardings (a pure-dict tree) for every array of an nnx State, from each
    Variable's logical names."""
    shapes = nnx.to_pure_dict(state)
    names = logical_names(state)
    return jax.tree.map(
        lambda n, leaf: jax.NamedSharding(mesh, spec_for(n, leaf.shape, mesh, rules)),
        names,
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
    """Batches arrive as [accumulation, micro, seq_len]: micro-batch rows split over data x fsdp."""
    return jax.NamedSharding(mesh, jax.P(None, BATCH_AXES, None))


def row_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
    """Eval batches arrive as [rows, seq_len]: rows split over data x fsdp."""
    return jax.NamedSharding(mesh, jax.P(BATCH_AXES, None))


def process_rows(sharding: jax.NamedSharding, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Indices along ``axis`` of a global array of ``shape`` that this process's devices hold,
    sorted: the rows a process reads and assembles itself (every row for one process)."""
    held: set[int] = set()
    for index in sharding.addressable_devices_indices_map(shape).values():
        held.update(range(*index[axis].indices(shape[axis])))
    return np.asarray(sorted(held), np.int64)


def replicated(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
    return jax.NamedSharding(mesh, jax.P())

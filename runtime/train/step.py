"""The train step: one pure function, jitted once with explicit shardings.

A step takes the state and a global batch shaped [accumulation, micro, seq_len]
(see runtime.data.batches for the fields), runs the micro-batches in a
`lax.scan`, and updates once. The loss is the mean over every trained token of
the global batch: per micro-batch we sum token losses and count tokens, and
divide once at the end, so the number (and the gradient) is the same whatever
the accumulation or the mesh, and padding never dilutes it.

Mixed precision: `params` is the float32 master copy the optimizer updates; the
forward runs on a copy cast to the model's compute dtype (bfloat16 when the spec
says so). A step whose loss, gradient or new parameters are not finite changes nothing and says
so in its metrics, so the loop can stop with the last good state intact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from runtime.models import lora
from runtime.platform import mesh as meshlib
from runtime.train.cross_entropy import chunked_cross_entropy, logit_chunks
from runtime.train.optim import at_step


class TrainState(NamedTuple):
    step: jax.Array  # int32 scalar: steps taken (batches consumed), refused ones included
    params: Any  # pure dict of float32 trainable arrays
    opt_state: Any
    skipped: jax.Array  # int32 scalar: steps whose update was refused (loss, gradient or update not finite)


def start_state(params, tx: optax.GradientTransformation) -> TrainState:
    """Step 0: nothing taken, nothing skipped."""
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jnp.zeros((), jnp.int32))


def cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def token_statistics(
    graphdef, params, frozen, batch, compute_dtype, dropout_key=None
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """(sum of token losses, (trained tokens, correctly predicted trained tokens)) of a
    micro-batch. `dropout_key` turns adapter dropout on (training only).

    Token loss ``logsumexp(logits) - logits[target]``, correct ``argmax(logits) == target``;
    `chunked_cross_entropy` computes both from the final hidden states, a slice of positions
    at a time, with their gradient in the same pass."""
    model = nnx.merge(graphdef, cast(params, compute_dtype), cast(frozen, compute_dtype))
    with lora.dropout_rng(dropout_key):
        hidden = model.hidden(batch["input_ids"], positions=batch["positions"], segment_ids=batch["segment_ids"])
    rows, length = batch["targets"].shape
    head_trains = ("embed" if model.lm_head is None else "lm_head") in params
    loss_sum, correct = chunked_cross_entropy(
        model.logits_of,
        hidden,
        model.head_weight(),
        batch["targets"],
        batch["loss_mask"],
        logit_chunks(rows, length, model.config.vocab_size),
        head_trains,
    )
    return loss_sum, (jnp.sum(batch["loss_mask"].astype(jnp.float32)), correct)


def train_step(
    state: TrainState,
    frozen,
    batch,
    *,
    graphdef,
    tx: optax.GradientTransformation,
    schedule: Callable,
    compute_dtype,
    dropout_seed: int | None = None,
) -> tuple[TrainState, dict]:
    grad_fn = jax.value_and_grad(token_statistics, argnums=1, has_aux=True)
    accumulation = jax.tree.leaves(batch)[0].shape[0]

    def micro(carry, inputs):
        micro_batch, index = inputs
        grads, loss_sum, tokens, correct = carry
        key = None
        if dropout_seed is not None:  # a function of (seed, step, micro-batch): resumes reproduce it
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(dropout_seed), state.step), index)
        (loss, (count, right)), g = grad_fn(graphdef, state.params, frozen, micro_batch, compute_dtype, key)
        grads = jax.tree.map(jnp.add, grads, g)
        return (grads, loss_sum + loss, tokens + count, correct + right), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    start = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    (grads, loss_sum, tokens, correct), _ = jax.lax.scan(micro, start, (batch, jnp.arange(accumulation)))
    denominator = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    loss = loss_sum / denominator
    grad_norm = optax.tree.norm(grads)
    # The schedule reads the state's step (refused steps included), never a count of applied
    # updates: the rate applied is the rate logged (`optim.at_step`).
    old_opt_state = at_step(state.opt_state, state.step)
    updates, opt_state = tx.update(grads, old_opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(params))
    kept = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old), (params, opt_state), (state.params, old_opt_state)
    )
    new_state = TrainState(
        state.step + 1,
        kept[0],
        at_step(kept[1], state.step + 1),
        state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": schedule(state.step),
        "tokens": tokens,
        "token_accuracy": correct / denominator,
        "finite": finite,
        "skipped": new_state.skipped,
    }
    return new_state, metrics


def _like_params(tree, params, param_shardings, fallback):
    """Shardings for an optimizer state: a subtree shaped like the params (Adam's moments)
    gets theirs, leaf by leaf where the shapes agree (adafactor's factored statistics
    share the tree but not the shapes: those are replicated)."""
    if jax.tree.structure(tree) == jax.tree.structure(params):
        return jax.tree.map(lambda leaf, p, s: s if leaf.shape == p.shape else fallback, tree, params, param_shardings)
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "shape"):
        children = [_like_params(t, params, param_shardings, fallback) for t in tree]
        return type(tree)(*children) if hasattr(tree, "_fields") else type(tree)(children)
    if isinstance(tree, dict):
        return {k: _like_params(v, params, param_shardings, fallback) for k, v in tree.items()}
    return jax.tree.map(lambda _: fallback, tree)


def state_shardings(abstract_state: TrainState, param_shardings, mesh) -> TrainState:
    replicated = meshlib.replicated(mesh)
    return TrainState(
        step=replicated,
        params=param_shardings,
        opt_state=_like_params(abstract_state.opt_state, abstract_state.params, param_shardings, replicated),
        skipped=replicated,
    )


def compile_step(
    graphdef,
    tx,
    schedule,
    compute_dtype,
    shardings: TrainState,
    frozen_shardings,
    mesh,
    dropout_seed: int | None = None,
):
    """The jitted step: state donated, batch split over data x fsdp, metrics replicated."""
    step = functools.partial(
        train_step, graphdef=graphdef, tx=tx, schedule=schedule, compute_dtype=compute_dtype, dropout_seed=dropout_seed
    )
    jitted = jax.jit(
        step,
        in_shardings=(shardings, frozen_shardings, meshlib.batch_sharding(mesh)),
        out_shardings=(shardings, meshlib.replicated(mesh)),
        donate_argnums=(0,),
    )
    return OnMesh(jitted, mesh)


class OnMesh:
    """A jitted function traced under the mesh and the logical axis rules, so the
    model's activation constraints (runtime.models.sharding.constrain) take effect.
    (`jax.set_mesh` cannot be entered inside a jit, so it wraps the call.)"""

    def __init__(self, jitted, mesh):
        self.jitted, self.mesh = jitted, mesh

    def __call__(self, *args):
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(meshlib.RULES):
            return self.jitted(*args)

    def lower(self, *args):
        with jax.set_mesh(self.mesh), nnx.logical_axis_rules(meshlib.RULES):
            return self.jitted.lower(*args)


def init_state(params, tx, shardings: TrainState) -> TrainState:
    """The first state, built directly with its shardings (parameters are float32 masters)."""

    def build(p):
        return start_state(cast(p, jnp.float32), tx)

    return jax.jit(build, out_shardings=shardings)(params)

"""The engine: one builder from (step settings, model config, devices) to the mesh, the
optimizer, the state shardings and the jitted train and eval steps.

The training loop, inference (`sftc eval/generate/chat/export`), `sftc bench` and
the tests all build their step here, so what `sftc bench` times is exactly the
step a run takes (adapters, dtype, accumulation, clipping, mesh included), and
rules such as "micro must split over the data-parallel devices" live once.

The engine holds no tokenizer, no data and no weights: `load_weights` gives the
initial (trainable, frozen) parameters of a plan, `Engine.fresh_state` turns them
into a sharded train state, and `Engine.restore_target` is what a checkpoint
restores onto.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runtime.models import ModelConfig, build
from runtime.plan.run_plan import LoraPlan, Plan
from runtime.plan.settings import Optimizer, Schedule
from runtime.plan.sftc_error import SftcError
from runtime.platform import mesh as meshlib
from runtime.train import optim
from runtime.train import schedule as schedulelib
from runtime.train import step as steplib


class EngineError(SftcError, ValueError):
    """The step cannot be built for these settings; the message says which to change."""


@dataclass(frozen=True)
class StepSettings:
    """What the train step depends on, projected from a decided Plan (`of`), or written
    directly by a benchmark that has no spec."""

    steps: int
    micro: int
    accumulation: int
    dtype: str  # compute dtype: float32 | bfloat16
    optimizer: Optimizer
    schedule: Schedule  # decided: warmup/decay in steps
    clip: float | None
    mesh: Mapping[str, int | str]
    adapter: LoraPlan | None = None
    seed: int = 0  # adapter initialisation and dropout masks
    quantize: str | None = None  # how the frozen base is stored (runtime.models.quantize)

    @classmethod
    def of(cls, plan: Plan) -> StepSettings:
        if plan.train.steps is None:
            raise EngineError("the plan's step count is not decided yet (prepare the data first)")
        return cls(
            steps=plan.train.steps,
            micro=plan.train.micro,
            accumulation=plan.accumulation,
            dtype=plan.model.dtype,
            optimizer=plan.train.optimizer,
            schedule=plan.train.schedule,
            clip=plan.train.clip,
            mesh=plan.train.mesh,
            adapter=plan.model.adapter,
            seed=plan.data.seed,
            quantize=plan.model.quantize,
        )


def compute_dtype(name: str):
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def _with_adapter(model, settings: StepSettings, seed: int):
    """The model as the step trains it: adapters added, the frozen base quantized if asked."""
    if settings.adapter is None:
        if settings.quantize is not None:
            raise EngineError(f"quantize = {settings.quantize} needs a LoRA adapter: a quantized base is frozen")
        return model
    from runtime.models import lora, quantize

    model = lora.add_lora(model, settings.adapter, rngs=seed)
    return model if settings.quantize is None else quantize.quantize_model(model, settings.quantize)


def _trainable(settings: StepSettings):
    from runtime.models import lora

    return lora.trainable_filter(settings.adapter)


def _abstract_model(settings: StepSettings, config: ModelConfig):
    """(graphdef, abstract trainable State, abstract frozen State): shapes and logical axes only."""

    def make():
        model = build(config, 0, dtype=compute_dtype(settings.dtype), param_dtype=jnp.float32)
        return _with_adapter(model, settings, 0)

    return nnx.split(nnx.eval_shape(make), _trainable(settings), ...)


def load_weights(settings: StepSettings, config: ModelConfig, checkpoint: Path | None) -> tuple[Any, Any]:
    """(float32 trainable params, frozen params in the compute dtype) as pure dicts.

    From `checkpoint` (an HF directory) when given, else freshly initialised from
    `settings.seed`. With a LoRA adapter only the adapter trains; the base is frozen, and
    loaded in the compute dtype (the same values as casting a float32 load)."""
    compute = compute_dtype(settings.dtype)
    if checkpoint is None:
        model = build(config, rngs=settings.seed, dtype=compute, param_dtype=jnp.float32)
    else:
        from runtime.checkpoints.hf_checkpoint import load_pretrained

        # A frozen base (LoRA) is read straight into the compute dtype, tensor by tensor: a bf16
        # run never holds a float32 copy of it. What trains is float32.
        # A quantized base is quantized tensor by tensor as it is read.
        frozen_base = settings.adapter is not None
        convert = None
        if settings.quantize is not None:
            from runtime.models.quantize import converter

            convert = converter(settings.quantize, compute)
        loaded, _ = load_pretrained(checkpoint, dtype=settings.dtype if frozen_base else "float32", convert=convert)
        graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(config, 0, dtype=compute, param_dtype=jnp.float32)))
        model = nnx.merge(graphdef, nnx.split(loaded)[1])
    model = _with_adapter(model, settings, settings.seed)
    _, params, frozen = nnx.split(model, _trainable(settings), ...)
    return nnx.to_pure_dict(params), steplib.cast(nnx.to_pure_dict(frozen), compute)


def frozen_weights(settings: StepSettings, config: ModelConfig, checkpoint: Path | None):
    """The frozen parameters alone, for a model whose trained ones a run's checkpoint holds: a full
    fine-tune freezes nothing, so nothing is read or initialised only to be replaced."""
    _, _, frozen = _abstract_model(settings, config)
    if not jax.tree.leaves(frozen):
        return nnx.to_pure_dict(frozen)
    return load_weights(settings, config, checkpoint)[1]


def over_original_base(model, settings: StepSettings, config: ModelConfig, checkpoint: Path | None):
    """The trained adapters of ``model`` (a quantized-base LoRA model) over the base as it was
    before quantization, in the compute dtype: what an export applies them to (peft loads the
    original base; `hf` merges into it). A model without quantization is returned as is."""
    if settings.quantize is None:
        return model
    plain = dataclasses.replace(settings, quantize=None)
    _, frozen = load_weights(plain, config, checkpoint)
    graphdef, _, _ = _abstract_model(plain, config)
    _, params, _ = nnx.split(model, _trainable(settings), ...)
    return nnx.merge(graphdef, nnx.to_pure_dict(params), frozen)


class Engine:
    """The compiled train and eval steps of one (settings, config) on a mesh."""

    def __init__(self, settings: StepSettings, config: ModelConfig, devices=None):
        from runtime.platform.allocator import reuse_freed_memory

        reuse_freed_memory()  # before JAX's CPU threads first allocate (idempotent; see runtime.platform.allocator)
        self.settings, self.config = settings, config
        devices = list(devices) if devices is not None else jax.devices()
        self.devices = devices
        shape = meshlib.mesh_shape(settings.mesh, len(devices))
        self.mesh_shape = shape
        self.mesh = meshlib.make_mesh(shape, devices)
        parallel = shape["data"] * shape["fsdp"]
        if settings.micro % parallel:
            raise EngineError(
                f"micro {settings.micro} does not split over {parallel} data-parallel devices (data x fsdp): "
                f"make micro a multiple of {parallel}, or change the mesh"
            )
        self.schedule = schedulelib.build(settings.schedule, settings.optimizer.lr, settings.steps)
        self.tx = optim.optimizer(settings.optimizer, self.schedule, settings.clip)
        self.compute = compute_dtype(settings.dtype)
        self.graphdef, abstract_params, abstract_frozen = _abstract_model(settings, config)
        pure = nnx.to_pure_dict(abstract_params)
        self.abstract_state = jax.eval_shape(lambda p: steplib.start_state(p, self.tx), pure)
        self.shardings = steplib.state_shardings(
            self.abstract_state, meshlib.state_shardings(abstract_params, self.mesh), self.mesh
        )
        self.frozen_shardings = meshlib.state_shardings(abstract_frozen, self.mesh)
        dropout = settings.adapter.dropout if settings.adapter is not None else 0.0
        self.step_fn = steplib.compile_step(
            self.graphdef,
            self.tx,
            self.schedule,
            self.compute,
            self.shardings,
            self.frozen_shardings,
            self.mesh,
            dropout_seed=settings.seed if dropout > 0 else None,
        )
        self.eval_fn = steplib.OnMesh(
            jax.jit(
                functools.partial(steplib.token_statistics, self.graphdef, compute_dtype=self.compute),
                out_shardings=meshlib.replicated(self.mesh),
            ),
            self.mesh,
        )
        self.batch_sharding = meshlib.batch_sharding(self.mesh)

    @property
    def micro(self) -> int:
        return self.settings.micro

    def fresh_state(self, params) -> steplib.TrainState:
        return steplib.init_state(params, self.tx, self.shardings)

    def place_frozen(self, frozen):
        return jax.device_put(frozen, self.frozen_shardings)

    def restore_target(self):
        """Abstract arrays with this engine's shardings: what a checkpoint restores onto."""
        from runtime.checkpoints.orbax_checkpoints import abstract_like

        return abstract_like(self.abstract_state, self.shardings)

    def batch_rows(self) -> np.ndarray:
        """The rows of a global batch `[batch, seq_len]` this process reads and assembles:
        its devices' share of every micro-batch (all rows for one process)."""
        accumulation, micro = self.settings.accumulation, self.settings.micro
        held = meshlib.process_rows(self.batch_sharding, (accumulation, micro, 1), 1)
        return (np.arange(accumulation)[:, None] * micro + held[None, :]).reshape(-1)

    def place(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of a global batch (`batch_rows`, in that order) as the global
        `[accumulation, micro, seq_len]` arrays on the mesh."""
        accumulation, micro = self.settings.accumulation, self.settings.micro
        return {
            k: jax.make_array_from_process_local_data(
                self.batch_sharding, v.reshape(accumulation, -1, v.shape[-1]), (accumulation, micro, v.shape[-1])
            )
            for k, v in batch.items()
        }

    def eval_rows(self, rows: int) -> np.ndarray:
        """The rows of an eval batch `[rows, seq_len]` this process reads and assembles."""
        return meshlib.process_rows(meshlib.row_sharding(self.mesh), (rows, 1), 0)

    def place_rows(self, batch: Mapping[str, np.ndarray], rows: int) -> dict[str, jax.Array]:
        """This process's rows (`eval_rows(rows)`) of an eval batch of ``rows`` rows, on the mesh."""
        sharding = meshlib.row_sharding(self.mesh)
        return {k: jax.make_array_from_process_local_data(sharding, v, (rows, v.shape[-1])) for k, v in batch.items()}

    def token_sums(self, params, frozen, pipeline, source: str | None = None) -> tuple[float, float, float]:
        """(sum of token losses, trained tokens, correctly predicted tokens) over the eval rows of
        ``pipeline`` (of one source, or all), `micro` rows a batch, each process assembling its share."""
        total = tokens = right = 0.0
        for batch in pipeline.eval_batches(self.micro, source=source, rows=self.eval_rows(self.micro)):
            loss_sum, (count, correct) = self.eval_fn(params, frozen, self.place_rows(batch, self.micro))
            total, tokens, right = total + float(loss_sum), tokens + float(count), right + float(correct)
        return total, tokens, right

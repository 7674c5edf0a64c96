"""Orbax checkpoints: a state saved on one mesh restores onto another, exactly."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_PROBE = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from runtime.platform import mesh as meshlib
    from runtime.models import ModelConfig, build
    from runtime.plan.settings import AdamW, Constant
    from runtime.train import optim, schedule, step
    from runtime.checkpoints.orbax_checkpoints import Checkpoints, abstract_like

    config = ModelConfig.llama(layers=1, dim=64, heads=4, kv_heads=2, ffn=128, vocab=128)
    tx = optim.optimizer(AdamW(lr=1e-2),
                         schedule.build(Constant(), 1e-2, 10), clip=1.0)
    graphdef, params, _ = nnx.split(build(config, 0), nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    abstract = nnx.split(nnx.eval_shape(lambda: build(config, 0)), nnx.Param, ...)[1]
    abstract_state = jax.eval_shape(lambda p: step.start_state(p, tx), params)

    def shardings(shape, devices):
        mesh = meshlib.make_mesh(shape, devices)
        return step.state_shardings(abstract_state, meshlib.state_shardings(abstract, mesh), mesh)

    directory = tempfile.mkdtemp()
    one = shardings({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    state = step.init_state(params, tx, one)
    state = state._replace(step=state.step + 3)
    saver = Checkpoints(directory, keep=2)
    saver.save(3, state, {"step": 3})
    saver.close()
    eight = shardings({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices())
    restored, record = Checkpoints(directory, keep=2).restore(abstract_like(abstract_state, eight))
    same = all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)))
    q = restored.params["layers"][0]["attn"]["q"]["kernel"]
    mu = restored.opt_state[1][0].mu["layers"][0]["attn"]["q"]["kernel"]
    print(json.dumps({"same": same, "step": int(restored.step), "record": record,
                      "q": [str(q.sharding.spec), len(q.sharding.device_set)], "mu": str(mu.sharding.spec)}))
    """
)


def test_a_checkpoint_restores_onto_a_different_mesh():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"] and result["step"] == 3 and result["record"] == {"step": 3}
    assert result["q"] == ["P('fsdp', 'tensor')", 8]
    assert result["mu"] == "P('fsdp', 'tensor')"  # optimizer moments are sharded like their parameters

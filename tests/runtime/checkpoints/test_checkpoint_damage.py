"""Restoring past a damaged checkpoint, and stopping at any other restore error (issue 21.7).

Each kind of damage is made on disk as a crash or a careless `rm` leaves it, and must be set
aside with a reason that says what is damaged; each failure of the machine (memory, I/O) or
of the request (a state of another shape) must stop with a `RestoreError` and move nothing.
The multi-process case (only the primary moves, the others wait; one process's failure stops
every process) runs as a 2-process job on a loopback coordinator."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runtime.checkpoints.hf_checkpoint import CheckpointError
from runtime.checkpoints.orbax_checkpoints import Checkpoints
from runtime.plan.sftc_error import SftcError

ROOT = Path(__file__).resolve().parents[3]


class Pair(NamedTuple):  # a NamedTuple, as the train state is: Orbax rebuilds it from state/_METADATA
    w: jax.Array
    n: jax.Array


STATE = Pair(jnp.arange(1000, dtype=jnp.float32).reshape(10, 100), jnp.ones((3,), jnp.int32))


def _abstract(state=STATE):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


@pytest.fixture
def saved(tmp_path) -> Path:
    """checkpoints/ with steps 4 and 8 of STATE (8 scaled by 2)."""
    directory = tmp_path / "checkpoints"
    checkpoints = Checkpoints(directory, keep=5, async_save=False)
    checkpoints.save(4, STATE, {"step": 4})
    checkpoints.save(8, jax.tree.map(lambda x: x * 2, STATE), {"step": 8})
    checkpoints.close()
    return directory


def _data_files(step_dir: Path) -> list[Path]:
    return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {  # what a crash or a careless `rm` leaves -> what the reason says
    "manifest deleted": (
        lambda s: (s / "state" / "manifest.ocdbt").unlink(),
        "a file is missing: state/manifest.ocdbt",
    ),
    "tree metadata deleted": (lambda s: (s / "state" / "_METADATA").unlink(), "a file is missing: state/_METADATA"),
    "tree metadata emptied": (
        lambda s: (s / "state" / "_METADATA").write_text(""),
        "a file is missing: state/_METADATA",
    ),
    "manifest cut short": (lambda s: _cut(s / "state" / "manifest.ocdbt"), "data does not decode"),
    "array metadata cut short": (lambda s: _cut(s / "state" / "_METADATA"), "a metadata file is not readable"),
    "data files cut short": (lambda s: [_cut(p) for p in _data_files(s)], "a file is cut short"),
    "data files deleted": (lambda s: [p.unlink() for p in _data_files(s)], "data is missing"),
    "record deleted": (lambda s: (s / "record" / "metadata").unlink(), "a file is missing: record/metadata"),
    "record cut short": (lambda s: _cut(s / "record" / "metadata"), "a metadata file is not readable"),
    "state directory deleted": (lambda s: shutil.rmtree(s / "state"), "a file is missing: state/_METADATA"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_set_aside_with_what_is_damaged(saved, kind):
    damage, said = DAMAGE[kind]
    damage(saved / "8")
    checkpoints = Checkpoints(saved, keep=5)
    restored = checkpoints.restore_newest_good(_abstract())
    checkpoints.close()
    assert restored.step == 4 and restored.record == {"step": 4}
    np.testing.assert_array_equal(np.asarray(restored.state.w), np.asarray(STATE.w))
    ((step, reason),) = restored.skipped
    assert step == 8 and reason.startswith(said)
    assert restored.moved_to == saved.with_name("checkpoints.unusable")
    assert (restored.moved_to / "8").is_dir() and sorted(p.name for p in saved.iterdir()) == ["4"]


def _fail_with(error: BaseException):
    def restore(*args, **kwargs):
        raise error

    return restore


def _wrapped(cause: BaseException) -> Exception:
    """As Orbax reports a failed read of an array: its own Exception raised from the cause."""
    try:
        raise cause
    except BaseException as e:
        try:
            raise Exception("Encountered error while reading array index: (slice(0, 3, 1),).") from e
        except Exception as wrapped:
            return wrapped


NOT_DAMAGE = {
    "out of memory": (MemoryError(), "MemoryError"),
    "an I/O error": (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    "out of memory while reading an array": (
        _wrapped(MemoryError("std::bad_alloc")),
        "Encountered error while reading",
    ),
    "device memory exhausted": (
        _wrapped(ValueError("RESOURCE_EXHAUSTED: Out of memory allocating 4 GiB")),
        "reading array",
    ),
    "a missing file that is not the checkpoint's": (
        FileNotFoundError(errno.ENOENT, "No such file", "/opt/lib/x.so"),
        "x.so",
    ),
}


@pytest.mark.parametrize("kind", NOT_DAMAGE)
def test_a_failure_of_the_machine_stops_and_moves_nothing(saved, kind, monkeypatch):
    """Out of memory or an I/O error used to move every checkpoint aside and start the run
    again at step 0. Now the run stops, says what failed and what to do, and keeps them all."""
    error, said = NOT_DAMAGE[kind]
    checkpoints = Checkpoints(saved, keep=5)
    monkeypatch.setattr(checkpoints.manager, "restore", _fail_with(error))
    with pytest.raises(CheckpointError, match="did not restore") as raised:
        checkpoints.restore_newest_good(_abstract())
    checkpoints.close()
    message = str(raised.value)
    assert isinstance(raised.value, SftcError)  # shown as one line by every command, exit 1
    assert message.startswith(f"checkpoint 8 in {saved} did not restore: ") and said in message
    assert "nothing was set aside" in message and "help:" in message
    assert sorted(p.name for p in saved.iterdir()) == ["4", "8"]
    assert not saved.with_name("checkpoints.unusable").exists()


def test_a_checkpoint_that_vanished_under_the_restore_is_not_taken_for_damage(saved, monkeypatch):
    """Another process or job moved it away (or the storage went): the files say nothing."""
    checkpoints = Checkpoints(saved, keep=5)

    def vanishing(step, args=None):
        shutil.rmtree(saved / str(step))
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(saved / str(step) / "state"))

    monkeypatch.setattr(checkpoints.manager, "restore", vanishing)
    with pytest.raises(CheckpointError, match="checkpoint 8 .* did not restore: FileNotFoundError"):
        checkpoints.restore_newest_good(_abstract())
    checkpoints.close()
    assert sorted(p.name for p in saved.iterdir()) == ["4"]  # step 4 untouched, nothing set aside
    assert not saved.with_name("checkpoints.unusable").exists()


def test_a_state_of_another_shape_is_not_taken_for_damage(saved):
    """The model or optimizer changed since the save: every checkpoint fails alike, and
    setting them all aside would throw the whole run away."""
    other = STATE._replace(w=jnp.zeros((10, 99), jnp.float32))
    checkpoints = Checkpoints(saved, keep=5)
    with pytest.raises(CheckpointError, match=r"checkpoint 8 .* did not restore: ValueError: .*shape") as raised:
        checkpoints.restore_newest_good(_abstract(other))
    checkpoints.close()
    assert "--fresh" in str(raised.value)
    assert sorted(p.name for p in saved.iterdir()) == ["4", "8"]
    assert not saved.with_name("checkpoints.unusable").exists()


def test_read_only_commands_stop_the_same_way_and_never_move(saved, monkeypatch):
    checkpoints = Checkpoints(saved, keep=5)
    (saved / "8" / "state" / "manifest.ocdbt").unlink()
    restored = checkpoints.restore_newest_good(_abstract(), move_aside=False)
    assert restored.step == 4 and restored.skipped[0][0] == 8 and restored.moved_to is None
    monkeypatch.setattr(checkpoints.manager, "restore", _fail_with(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(CheckpointError, match="did not restore"):
        checkpoints.restore_newest_good(_abstract(), move_aside=False)
    checkpoints.close()
    assert sorted(p.name for p in saved.iterdir()) == ["4", "8"]


# ---------------------------------------------------------------- a 2-process job

_JOB = textwrap.dedent(
    """
    import errno, json, sys
    from pathlib import Path
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, index, directory, case = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=index)
    import jax.numpy as jnp, numpy as np
    from runtime.platform import distributed
    from runtime.checkpoints.hf_checkpoint import CheckpointError
    from runtime.checkpoints.orbax_checkpoints import Checkpoints
    distributed._joined = True

    mesh = jax.make_mesh((2,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.NamedSharding(mesh, jax.P("x"))
    full = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)  # halves too big to inline
    def state(scale):
        return {"w": jax.make_array_from_callback((64, 64), sharding, lambda i: full[i] * scale)}
    abstract = {"w": jax.ShapeDtypeStruct((64, 64), jnp.float32, sharding=sharding)}
    if case == "save":
        checkpoints = Checkpoints(directory, keep=5)
        checkpoints.save(4, state(1), {"step": 4})
        checkpoints.save(8, state(2), {"step": 8})
        checkpoints.close()
        sys.exit(0)
    checkpoints = Checkpoints(directory, keep=5)
    if case == "process 1 fails" and index == 1:
        def broken(*args, **kwargs):
            raise OSError(errno.EIO, "Input/output error")
        checkpoints.manager.restore = broken
    try:
        restored = checkpoints.restore_newest_good(abstract)
        out = {"step": restored.step, "skipped": [s for s, _ in restored.skipped],
               "why": [r for _, r in restored.skipped],
               "w": np.asarray(restored.state["w"].addressable_data(0)).tolist()}
    except CheckpointError as error:
        out = {"error": str(error)}
    checkpoints.close()
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(directory: Path, case: str) -> list[dict]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1", "PYTHONPATH": str(ROOT)}
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _JOB, str(port), str(i), str(directory), case],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        assert process.returncode == 0, out[-3000:]
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        results.append(json.loads(lines[-1][len("RESULT ") :]) if lines else None)
    return results


@pytest.mark.slow
def test_in_a_job_the_primary_sets_aside_and_one_process_failure_stops_every_process(tmp_path):
    directory = tmp_path / "checkpoints"
    _job(directory, "save")
    unusable = directory.with_name("checkpoints.unusable")

    kept = tmp_path / "kept"
    shutil.copytree(directory, kept)
    one, two = _job(kept, "process 1 fails")  # process 0 restores; process 1 cannot read
    assert "error" in one and one == two
    assert one["error"].startswith(f"checkpoint 8 in {kept} did not restore on process 1: OSError")
    assert sorted(p.name for p in kept.iterdir() if p.name.isdigit()) == ["4", "8"]
    assert not kept.with_name("kept.unusable").exists()

    for data in (directory / "8" / "state").glob("ocdbt.process_1/d/*"):  # process 1's half, cut short:
        _cut(data)  # process 0 restores its half, process 1 cannot; neither uses step 8
    one, two = _job(directory, "damaged")
    assert one["step"] == two["step"] == 4 and one["skipped"] == two["skipped"] == [8]
    assert one["why"] == two["why"] and one["why"][0].startswith("a file is cut short: ValueError: OUT_OF_RANGE")
    full = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    np.testing.assert_array_equal(np.concatenate([one["w"], two["w"]]), full)  # each holds its half of step 4
    assert (unusable / "8").is_dir() and sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["4"]

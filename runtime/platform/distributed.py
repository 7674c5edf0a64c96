"""Many processes, one program: joining JAX's multi-controller runtime, and the few rules that
differ from a single process.

Every process of a job runs the same `sftc run`, in lockstep: the same plan, the same batches in
the same order, the same jitted steps over one mesh that spans them all (`jax.devices()` is every
device of the job). What differs is small and lives here:

- **joining**: `jax.distributed.initialize`, from flags (`--coordinator HOST:PORT
  --num-processes N --process-id I`) or from what JAX detects (SLURM, Cloud TPU, Kubernetes,
  Open MPI; `--distributed` or `JAX_COORDINATOR_ADDRESS`). No home-made coordination: the
  barriers and the broadcast below are JAX's own collectives.
- **who writes**: process 0 (the primary) prints progress and writes metrics, reports and exports;
  the others write theirs into a private scratch directory. Every process writes its part of each
  Orbax checkpoint into the shared run directory.
- **faults**: a process that dies stops sending heartbeats, and the coordination service ends
  the others after `HEARTBEAT_S` seconds (instead of a hang in the next collective).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from runtime.plan.sftc_error import SftcError

__all__ = [
    "Launch",
    "LaunchError",
    "JoinError",
    "join",
    "is_primary",
    "process_count",
    "broadcast_text",
    "gather_text",
    "barrier",
    "gather",
    "share",
    "merge_rows",
    "everywhere",
    "HEARTBEAT_S",
]

HEARTBEAT_S = 20  # a silent process is declared dead after this long; the others then stop
_TEXT_BYTES = 4096  # room for a broadcast path


class LaunchError(SftcError, ValueError):
    """The multi-process flags do not describe a job; the message says what to pass."""


class JoinError(SftcError, RuntimeError):
    """The job could not be joined (no coordinator, nothing detected); the message says why."""


@dataclass(frozen=True)
class Launch:
    """How this process joins a job (all None and ``auto`` False: it runs alone)."""

    coordinator: str | None = None  # HOST:PORT of process 0's coordination service
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False  # let JAX detect the cluster

    def validate(self) -> None:
        given = [x is not None for x in (self.coordinator, self.num_processes, self.process_id)]
        if any(given) and not all(given) and not self.auto:
            raise LaunchError(
                "a multi-process job needs all of --coordinator HOST:PORT, --num-processes N and "
                "--process-id I (or --distributed, to let JAX read them from the cluster)"
            )
        if self.coordinator is not None and ":" not in self.coordinator:
            raise LaunchError(f"--coordinator {self.coordinator!r} is not HOST:PORT (for example 10.0.0.1:8476)")
        if self.num_processes is not None and self.num_processes < 1:
            raise LaunchError("--num-processes must be at least 1")
        if (
            self.process_id is not None
            and self.num_processes is not None
            and not 0 <= self.process_id < self.num_processes
        ):
            raise LaunchError(f"--process-id {self.process_id} is not in 0..{self.num_processes - 1}")

    @property
    def wanted(self) -> bool:
        """Whether to join a job: flags given, or a coordinator named in the environment."""
        return self.auto or self.coordinator is not None or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def join(launch: Launch) -> None:
    """Join the job `launch` describes (nothing for a single process). Call before any JAX
    computation: the backend must start with every process connected."""
    launch.validate()
    if not launch.wanted or launch.num_processes == 1:
        return
    import jax

    from runtime.platform.allocator import reuse_freed_memory

    # A job's barriers start JAX before the data is prepared, so host memory is tuned now
    # (tokenizing then runs single-threaded; see runtime.platform.allocator).
    reuse_freed_memory()
    # CPU devices of several processes reach each other through gloo (no effect on GPU/TPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=launch.coordinator,
            num_processes=launch.num_processes,
            process_id=launch.process_id,
            heartbeat_timeout_seconds=HEARTBEAT_S,
        )
    except (ValueError, RuntimeError) as error:
        raise JoinError(
            f"could not join the job: {error}. help: check that process 0 is running and that "
            f"{launch.coordinator or 'its address'} is reachable from here; without a cluster JAX "
            f"detects (SLURM, Cloud TPU, Kubernetes, Open MPI), pass --coordinator HOST:PORT "
            f"--num-processes N --process-id I"
        ) from None
    from runtime.platform.library_logs import native_stdout_to_log

    native_stdout_to_log()  # before the first collective: gloo's "[Gloo] Rank i is connected" lines go to the log
    global _joined
    _joined = True


_joined = False  # whether this process joined a job (one that did not never starts JAX here early)


def process_count() -> int:
    if not _joined:
        return 1
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Process 0: the one that prints, and writes what is not a checkpoint."""
    if not _joined:
        return True
    import jax

    return jax.process_index() == 0


def broadcast_text(text: str | None) -> str | None:
    """The primary's ``text`` on every process (None stays None); a no-op for one process."""
    if process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    return _unpack(np.asarray(multihost_utils.broadcast_one_to_all(_pack(text))))


def gather_text(text: str | None) -> list[str | None]:
    """Every process's ``text``, in process order, on every process (one process: ``[text]``)."""
    if process_count() == 1:
        return [text]
    from jax.experimental import multihost_utils

    return [_unpack(row) for row in np.asarray(multihost_utils.process_allgather(_pack(text)))]


def _pack(text: str | None) -> np.ndarray:
    raw = b"\x00" if text is None else b"\x01" + text.encode()
    if len(raw) > _TEXT_BYTES:
        raise ValueError(f"cannot broadcast {len(raw)} bytes (at most {_TEXT_BYTES})")
    buffer = np.zeros(_TEXT_BYTES + 4, np.uint8)
    buffer[:4] = np.frombuffer(np.uint32(len(raw)).tobytes(), np.uint8)
    buffer[4 : 4 + len(raw)] = np.frombuffer(raw, np.uint8)
    return buffer


def _unpack(got: np.ndarray) -> str | None:
    size = int(np.frombuffer(got[:4].tobytes(), np.uint32)[0])
    raw = got[4 : 4 + size].tobytes()
    return None if raw[:1] == b"\x00" else raw[1:].decode()


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (a no-op for one process)."""
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def share() -> tuple[int, int]:
    """(this process's index, the number of processes): which share of spread work is ours."""
    if not _joined:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def data_share():
    """This process's share of data preparation (`runtime.platform.process_share`), with the job's barrier."""
    from runtime.platform.process_share import Share

    index, count = share()
    return Share(index, count, barrier) if count > 1 else Share()


def everywhere(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (one process: ``flag``)."""
    if process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(np.asarray(multihost_utils.process_allgather(np.array([flag], np.bool_)))))


def merge_rows(rows: list[list[int] | None], width: int) -> list[list[int]]:
    """Rows of token ids that each process computed part of (None where another did), complete
    on every process; each row holds at most ``width`` ids."""
    from jax.experimental import multihost_utils

    packed = np.full((len(rows), width + 1), -1, np.int32)  # [length, ids...]; length -1: not ours
    for i, row in enumerate(rows):
        if row is not None:
            packed[i, 0] = len(row)
            packed[i, 1 : 1 + len(row)] = row
    every = np.asarray(multihost_utils.process_allgather(packed))  # [processes, rows, width + 1]
    merged = []
    for i in range(len(rows)):
        owners = np.nonzero(every[:, i, 0] >= 0)[0]
        if len(owners) != 1:
            raise RuntimeError(f"row {i} was computed by {len(owners)} processes, not one")
        length = int(every[owners[0], i, 0])
        merged.append(every[owners[0], i, 1 : 1 + length].tolist())
    return merged


def gather(tree):
    """``tree`` of (possibly multi-process) arrays as numpy on every process."""
    import jax

    if process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)

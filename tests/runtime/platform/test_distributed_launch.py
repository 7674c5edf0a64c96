"""The job flags of `sftc run`: a half-described job is a usage error naming what is missing,
before anything is prepared or trained. (The jobs themselves: test_multiprocess.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.platform.distributed import Launch, LaunchError


@pytest.mark.parametrize(
    "launch, message",
    [
        (
            Launch("127.0.0.1:8476", None, 0),
            "needs all of --coordinator HOST:PORT, --num-processes N and --process-id I",
        ),
        (Launch(None, 2, 1), "needs all of"),
        (Launch("localhost", 2, 0), "is not HOST:PORT"),
        (Launch("127.0.0.1:8476", 0, 0), "--num-processes must be at least 1"),
        (Launch("127.0.0.1:8476", 2, 2), "--process-id 2 is not in 0..1"),
    ],
)
def test_a_half_described_job_is_refused(launch, message):
    with pytest.raises(LaunchError, match=message.replace(".", r"\.")):
        launch.validate()


def test_who_joins_a_job(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert not Launch().wanted
    assert Launch("10.0.0.1:8476", 2, 0).wanted and Launch(auto=True).wanted
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:8476")
    assert Launch().wanted  # JAX reads the address; sftc joins


def test_sftc_run_with_half_the_flags_is_a_usage_error(tmp_path, monkeypatch, capsys):
    from sftlang.cli import main
    from tests.runtime.run_helpers import write_project

    monkeypatch.chdir(write_project(tmp_path))
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path / "cache"))
    assert main(["run", "tiny.sft", "--num-processes", "2"]) == 2
    assert "--coordinator HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_distributed_without_a_cluster_says_what_to_pass():
    """`--distributed` where JAX detects no cluster: a clear error, not a traceback."""
    root = Path(__file__).resolve().parents[3]
    code = (
        "from runtime.platform.distributed import Launch, JoinError, join\n"
        "try:\n    join(Launch(auto=True))\nexcept JoinError as e:\n    print('JoinError:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORD", "OMPI_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "JoinError: could not join the job" in done.stdout and "--coordinator HOST:PORT" in done.stdout, (
        done.stdout + done.stderr[-2000:]
    )


def test_gloo_connection_lines_go_to_the_log_not_the_terminal(tmp_path):
    """gloo prints `[Gloo] Rank i is connected to ...` on stdout (from C++) when a collective
    first connects the processes: a job's terminal shows only sftc's lines."""
    import socket

    root = Path(__file__).resolve().parents[3]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import sys\n"
        "from runtime.platform.library_logs import route_library_logs\n"
        "from runtime.platform.distributed import Launch, join, broadcast_text\n"
        "i = int(sys.argv[1])\n"
        f"route_library_logs({str(tmp_path)!r} + f'/sftc-{{i}}.log')\n"
        f"join(Launch('127.0.0.1:{port}', 2, i))\n"
        "print('sftc says:', broadcast_text('hello' if i == 0 else None))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORD", "OMPI_"))},
        "PYTHONPATH": str(root),
        "JAX_NUM_CPU_DEVICES": "1",
    }
    job = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    ended = [p.communicate(timeout=180) for p in job]
    for i, (p, (out, err)) in enumerate(zip(job, ended)):
        assert p.returncode == 0, out + err[-2000:]
        assert out == "sftc says: hello\n" and "Gloo" not in err, out + err
        assert f"INFO gloo: [Gloo] Rank {i} is connected to 1 peer ranks" in (tmp_path / f"sftc-{i}.log").read_text()

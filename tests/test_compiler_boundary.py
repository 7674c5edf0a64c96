"""The compiler never imports JAX (or the heavy ML stack): `sftc check` stays a
one-second CI gate on a machine without a GPU."""

import subprocess
import sys

HEAVY = ("jax", "flax", "optax", "orbax", "torch", "transformers", "datasets")


def test_check_fmt_diff_import_no_ml_stack():
    probe = (
        "import sys\n"
        "import sftlang.cli, sftlang.check, sftlang.fmt, sftlang.diff, sftlang.resolve\n"
        "from sftlang.cli import build_parser\n"
        "build_parser()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

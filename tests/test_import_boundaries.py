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


def test_the_runtime_never_imports_the_compiler_and_plan_never_imports_the_benchmark():
    """The runtime takes a Plan, never `.sft` text; `sftc plan` must not import `runtime.train.throughput`
    (importing it changes malloc settings for the process)."""
    probe = (
        "import sys\n"
        "import runtime.commands.sftc_plan, runtime.commands.sftc_run, runtime.commands.sftc_eval, runtime.commands.sftc_generate\n"
        "import runtime.commands.sftc_chat, runtime.commands.sftc_export, runtime.commands.sftc_preview, runtime.preflight.plan_report\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sftlang' or m == 'runtime.train.throughput'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

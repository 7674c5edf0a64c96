"""What each package may import, as the README's Layout table states it, held for every import in
the code (at the top of a module or inside a function). The compiler and the plan never import JAX:
`sftc check` stays a one-second CI gate on a machine without a GPU."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ML_STACK = ("jax", "jaxlib", "flax", "optax", "orbax", "qwix", "torch", "transformers", "datasets")
# the one exception, with its reason: a hub dataset's columns come from its builder's metadata
# (`sftc check` with the hub reachable; offline, or for local files, `datasets` is never imported)
LIGHT_USES = {("sftlang/check.py", "datasets")}


def layout() -> dict[str, tuple[set[str], set[str]]]:
    """README's Layout table: package directory -> (modules it names, packages it may import)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout") : text.index("\n## ", text.index("## Layout") + 1)]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z_/]+/)` \| (.*) \| (.*) \|$", line)
        if match:
            directory, holds, may = match.groups()
            modules = set(re.findall(r"`(\w+\.py)`", holds))
            if may.startswith("every `runtime` package"):
                allowed = {"runtime.*"}
            else:
                allowed = set(re.findall(r"`(runtime(?:\.\w+)?|sftlang)`", may.split(";")[0]))
            rows[directory] = (modules, allowed)
    return rows


LAYOUT = layout()


def package_of(module: str) -> str:
    """`runtime.train.loop` -> `runtime/train/`, `sftlang.cli` -> `sftlang/`."""
    parts = module.split(".")
    return "sftlang/" if parts[0] == "sftlang" else "/".join(parts[:2]) + "/"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, wherever it is; `from a import b` gives `a.b`,
    a relative import its absolute name."""
    package = path.relative_to(ROOT).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            base = node.module if node.level == 0 else base
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def source_files(directory: str) -> list[Path]:
    return sorted(p for p in (ROOT / directory).glob("*.py"))


def test_the_layout_names_every_package_and_module_and_each_exists():
    packages = {"sftlang/"} | {
        f"runtime/{p.name}/" for p in (ROOT / "runtime").iterdir() if (p / "__init__.py").is_file()
    }
    assert packages <= set(LAYOUT), f"packages missing from README's Layout: {sorted(packages - set(LAYOUT))}"
    for directory, (modules, _) in LAYOUT.items():
        present = {p.name for p in source_files(directory)} - {"__init__.py"}
        if directory == "grammar/":
            present = {p.name for p in (ROOT / directory).iterdir() if p.is_file()}
            assert {m.replace(".py", ".lark") for m in modules} | {"sft.lark"} <= present | {"sft.lark"}
            continue
        assert modules - present == set(), f"README names modules {directory} does not have"
        assert present - modules == set(), f"modules of {directory} README's Layout does not name"


def test_no_two_modules_share_a_name():
    seen: dict[str, Path] = {}
    for path in sorted([*(ROOT / "runtime").rglob("*.py"), *(ROOT / "sftlang").rglob("*.py")]):
        if path.name == "__init__.py":
            continue
        assert path.name not in seen, f"{path.relative_to(ROOT)} and {seen[path.name].relative_to(ROOT)}"
        seen[path.name] = path


@pytest.mark.parametrize("directory", [d for d in LAYOUT if d != "grammar/"])
def test_each_package_imports_only_what_the_layout_allows(directory):
    _, allowed = LAYOUT[directory]
    for path in source_files(directory):
        extra = {"runtime.commands"} if path.name == "cli.py" else set()
        for line, module in imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: imports {module}"
            if top not in ("runtime", "sftlang"):
                continue
            target = package_of(module)
            if target == directory:
                continue
            target_name = target.rstrip("/").replace("/", ".")
            assert target_name != "sftlang" or directory == "sftlang/", (
                f"{where}: the runtime never imports the compiler"
            )
            assert "runtime.*" in allowed or target_name in allowed | extra, (
                f"{where}, which README's Layout does not allow"
            )


@pytest.mark.parametrize("directory", ["sftlang/", "runtime/plan/"])
def test_the_compiler_and_the_plan_never_import_the_ml_stack(directory):
    """Not even inside a function: `sftc check` must never pull in JAX on any path."""
    for path in source_files(directory):
        for line, module in imports(path):
            if (str(path.relative_to(ROOT)), module.split(".")[0]) in LIGHT_USES:
                continue
            assert module.split(".")[0] not in ML_STACK, f"{path.relative_to(ROOT)}:{line}: imports {module}"


def test_building_the_command_line_imports_no_ml_stack():
    """`sftc check`, `fmt` and `diff` and the parser of every command (the runtime's command modules
    are imported to register their options) load no ML library."""
    probe = (
        "import sys\n"
        "import sftlang.cli, sftlang.check, sftlang.fmt, sftlang.diff, sftlang.resolve\n"
        "from sftlang.cli import build_parser\n"
        "build_parser()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ML_STACK!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_runtime_commands_never_load_the_compiler_and_plan_never_loads_the_benchmark():
    """The runtime takes a Plan, never `.sft` text; `sftc plan` must not import
    `runtime.train.throughput` (importing it changes malloc settings for the process)."""
    commands = sorted(p.stem for p in (ROOT / "runtime" / "commands").glob("sftc_*.py"))
    probe = (
        "import importlib, sys\n"
        f"for name in {commands!r}:\n"
        "    importlib.import_module('runtime.commands.' + name)\n"
        "import runtime.preflight.plan_report\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sftlang' or m == 'runtime.train.throughput'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_package_ships():
    """pyproject.toml lists the packages by hand (the grammar maps to `sftlang.grammar`): each
    package of the tree must be there, or an installed sftc lacks it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("sftlang", "runtime")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert packages - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"

"""An installed wheel works outside the checkout: the grammar ships as package data."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_grammar_and_parses_outside_the_checkout(tmp_path, source_tree):
    # built from a copy: setuptools writes build/ and sftc.egg-info beside the sources it builds
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source_tree),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("sftc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "sftlang/grammar/sft.lark" in names
        archive.extractall(tmp_path / "site")
    probe = (
        "from sftlang.parse import parse; import sftlang; print(sftlang.__file__); "
        "print(parse('model {\\n base = hf(\"x\")\\n}\\n')[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    location, problems = done.stdout.splitlines()
    assert location.startswith(str(tmp_path / "site")) and problems == "[]"


def test_every_package_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("sftlang", "runtime")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set()

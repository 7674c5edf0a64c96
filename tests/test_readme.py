"""The README's promises: its first two commands, and the CI script running the second."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_setup_and_test_commands():
    main, tests = _readme_commands()[:2]
    assert "pip install" in main and "specs/quickstart.sft" in main
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


def test_the_readme_makes_a_second_run_before_diffing_two():
    text = (ROOT / "README.md").read_text()
    after = text.split("After the quickstart", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    diff = next(i for i, line in enumerate(block) if "sftc diff runs/quickstart/" in line)
    assert any("sftc run" in line and "specs/quickstart.sft" in line for line in block[:diff]), block


def test_run_directories_in_the_docs_are_named_as_runs_name_them(tmp_path):
    """`runs/<name>/<timestamp>` examples use runtime.runs.run_directory.new_run_dir's format."""
    import re

    from runtime.runs.run_directory import new_run_dir

    stamp = re.compile(r"\d{8}-\d{6}(-\d+)?")
    assert stamp.fullmatch(new_run_dir(tmp_path).name)
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for found in re.finditer(r"runs/[\w.-]+/(\d[\w:.-]*)", path.read_text()):
            assert stamp.fullmatch(found.group(1)), f"{path.name}: {found.group(0)}"

"""`sftc diff`: semantic diffs of resolved specs, data fingerprints, `REV:path`, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sftlang.cli import main
from sftlang.diff import diff_specs, render_human, text_diff
from sftlang.fingerprint import fingerprint_pair, fingerprint_source
from sftlang.parse import parse
from sftlang.resolve import load_spec

BASE = """\
sft "support-bot"

model {
    base = hf("models/x")
}

data tickets = jsonl("data/tickets.jsonl") {
    split eval = 5% seed 7
}

template answer for tickets {
    prompt     = "### Question:\\n{question}\\n### Answer:\\n"
    completion = "{answer}"
}

train {
    epochs    = 3
    batch     = 32
    micro     = 8
    optimizer = adamw(lr = 1e-4, weight_decay = 0.01)
}

accept {
    loss <= 1.2
}
"""


def rows(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(start, start + n))


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def project(tmp_path: Path, name: str, spec: str, data: str | None = None, **extra: str) -> Path:
    root = tmp_path / name
    write(root, {"spec.sft": spec, "data/tickets.jsonl": data if data is not None else rows(4), **extra})
    return root / "spec.sft"


def run_diff(capsys, a, b, *flags: str) -> tuple[int, str, str]:
    code = main(["diff", str(a), str(b), *flags])
    out, err = capsys.readouterr()
    return code, out, err


def change_lines(out: str) -> list[str]:
    """Output lines with runs of spaces collapsed (column widths are not the point)."""
    return [" ".join(line.split()) if not line.startswith("    ") else line for line in out.splitlines()]


# ---------------------------------------------------------------- no change


def test_identical_specs_are_the_same(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(tmp_path, "b", BASE)
    assert run_diff(capsys, a, b) == (0, "no changes\n", "")


def test_default_written_out_reformatted_and_reordered_is_no_change(tmp_path, capsys):
    # lr = 2e-5 is adamw's default, `0.00002` the same number, keys and blocks reordered,
    # `split` written with a different layout, gates reordered, the output block spelled out.
    a = project(
        tmp_path,
        "a",
        BASE.replace("adamw(lr = 1e-4, weight_decay = 0.01)", "adamw(weight_decay = 0.01)").replace(
            "loss <= 1.2", "loss <= 1.2\n    token_accuracy >= 0.5"
        ),
    )
    b = project(
        tmp_path,
        "b",
        """\
sft "support-bot"
train { optimizer = adamw(weight_decay = 1e-2, lr = 0.00002)
  micro = 8
        batch = 32
  epochs = 3 }
template answer for tickets { completion = "{answer}"
 prompt = "### Question:\\n{question}\\n### Answer:\\n" }
accept { token_accuracy >= 0.50
 loss <= 1.20 }
data tickets = jsonl(path = "data/tickets.jsonl") { split eval = 5% seed 7 }
model { base = hf(path = "models/x")
 dtype = float32 }
output { dir = "runs/{name}" }
""",
    )
    assert run_diff(capsys, a, b) == (0, "no changes\n", "")


# ---------------------------------------------------------------- each kind of change


def test_settings_changed_added_and_optimizer_head(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(
        tmp_path,
        "b",
        BASE.replace("epochs    = 3", "epochs    = 2")
        .replace("adamw(lr = 1e-4, weight_decay = 0.01)", "lion(lr = 1e-5, weight_decay = 0.01)")
        .replace("    micro     = 8\n", "    micro     = 8\n    packing   = on\n"),
    )
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        "~ train.epochs 3 -> 2",
        "~ train.packing off -> on",
        "~ train.optimizer adamw -> lion",
        "~ train.optimizer.lr 1e-4 -> 1e-5",
        "~ train.optimizer.b2 0.999 -> 0.99",
        "- train.optimizer.eps 1e-8",
        "5 settings changed, 1 setting removed.",
    ]


def test_key_without_default_added_and_removed(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(tmp_path, "b", BASE.replace("    epochs    = 3\n", "    steps     = 2000\n"))
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        "- train.epochs 3",
        "+ train.steps 2000",
        "1 setting added, 1 setting removed.",
    ]


def test_data_source_added_and_removed(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(
        tmp_path,
        "b",
        BASE.replace(
            "\ntemplate", 'data faq = hf_dataset("org/faq", split = "train") {\n    overflow = truncate\n}\n\ntemplate'
        ),
    )
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        '+ data faq hf_dataset("org/faq", split = "train") { overflow = truncate }',
        "1 source added.",
    ]
    code, out, _ = run_diff(capsys, b, a)
    assert code == 1
    assert change_lines(out) == [
        '- data faq hf_dataset("org/faq", split = "train") { overflow = truncate }',
        "1 source removed.",
    ]


def test_source_path_and_split_changed(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(
        tmp_path,
        "b",
        BASE.replace('jsonl("data/tickets.jsonl")', 'jsonl("data/tickets-v2.jsonl")').replace(
            "5% seed 7", "10% seed 7"
        ),
        **{"data/tickets-v2.jsonl": rows(4)},  # the same bytes under another name: no content change
    )
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        '~ data tickets jsonl("data/tickets.jsonl") -> jsonl("data/tickets-v2.jsonl")',
        "~ data tickets.split 5% seed 7 -> 10% seed 7",
        "1 setting changed, 1 source changed.",
    ]


def test_template_prompt_text_diff(tmp_path, capsys):
    a = project(
        tmp_path,
        "a",
        BASE.replace(
            '"### Question:\\n{question}\\n### Answer:\\n"',
            '"""\n        System: be brief.\n        ### Question:\n'
            '        {question}\n        ### Answer:\n        """',
        ),
    )
    b = project(
        tmp_path,
        "b",
        BASE.replace(
            '"### Question:\\n{question}\\n### Answer:\\n"',
            '"""\n        System: be brief.\n        Question: {question}\n        ### Answer:\n        """',
        ),
    )
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert out.splitlines() == [
        "~ template answer.prompt",
        "     System: be brief.",
        "    -### Question:",
        "    -{question}",
        "    +Question: {question}",
        "     ### Answer:",
        "     ",
        "1 setting changed.",
    ]


def test_text_diff_separates_distant_hunks():
    old = "\n".join(f"line {i}" for i in range(20))
    new = old.replace("line 1\n", "line one\n").replace("line 18", "line eighteen")
    assert text_diff(old, new, context=1) == (
        " line 0",
        "-line 1",
        "+line one",
        " line 2",
        "…",
        " line 17",
        "-line 18",
        "+line eighteen",
        " line 19",
    )


def test_gate_threshold_changed_added_and_operator(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(tmp_path, "b", BASE.replace("loss <= 1.2", "loss <= 1.0\n    token_accuracy >= 0.5"))
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        "~ accept.loss <= 1.2 -> 1.0",
        "+ accept.token_accuracy >= 0.5",
        "1 gate changed, 1 gate added.",
    ]
    c = project(tmp_path, "c", BASE.replace("loss <= 1.2", "loss < 1.2"))
    code, out, _ = run_diff(capsys, a, c)
    assert change_lines(out) == ["~ accept.loss <= 1.2 -> < 1.2", "1 gate changed."]


def test_use_base_edit_changes_the_including_spec(tmp_path, capsys):
    child = 'sft "child"\n\nuse "base.sft"\n\ntrain {\n    epochs = 1\n}\n'
    a = project(tmp_path, "a", child, **{"base.sft": BASE})
    b = project(
        tmp_path,
        "b",
        child,
        **{"base.sft": BASE.replace("seed 7", "seed 8").replace("batch     = 32", "batch     = 64")},
    )
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        "~ data tickets.split 5% seed 7 -> 5% seed 8",
        "~ train.batch 32 -> 64",
        "2 settings changed.",
    ]


# ---------------------------------------------------------------- data content


def test_data_content_change_with_exact_row_deltas(tmp_path, capsys):
    a = project(tmp_path, "a", BASE, rows(6))
    b = project(tmp_path, "b", BASE, rows(5, start=1) + rows(3, start=100))  # rows 1-5 kept, 0 gone, 3 new
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == ["~ data tickets content changed: 6 -> 8 rows (+3, -1)", "1 data change."]


def test_eval_split_file_content_and_duplicates(tmp_path, capsys):
    spec = BASE.replace("5% seed 7", 'jsonl("data/eval.jsonl")')
    a = project(tmp_path, "a", spec, **{"data/eval.jsonl": rows(2)})
    b = project(tmp_path, "b", spec, **{"data/eval.jsonl": rows(2) + rows(1) + "\n\n"})  # a duplicate row, blank lines
    code, out, _ = run_diff(capsys, a, b)
    assert change_lines(out) == ["~ data tickets.split content changed: 2 -> 3 rows (+1, -0)", "1 data change."]


def test_fingerprints_of_glob_csv_json_and_parquet(tmp_path):
    write(
        tmp_path,
        {
            "p/part-1.jsonl": rows(2),
            "p/part-2.jsonl": rows(3, start=2),
            "t.csv": 'question,answer\n"multi\nline",a\nq2,a2\n\n',
            "t.json": json.dumps({"rows": [{"q": 1}, {"q": 2}, {"q": 3}]}),
        },
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": list(range(7))}), tmp_path / "t.parquet")
    calls = {
        "jsonl": ('jsonl("p/part-*.jsonl")', 5),
        "csv": ('csv("t.csv")', 2),
        "json": ('json("t.json", field = "rows")', 3),
        "parquet": ('parquet("t.parquet")', 7),
    }
    for kind, (text, expected) in calls.items():
        tree, problems = parse(f"data x = {text}\n", "t.sft")
        assert not problems
        assert fingerprint_source(tree.items[0].source, tmp_path).rows == expected, kind
    missing = fingerprint_source(parse('data x = jsonl("nope.jsonl")\n', "t.sft")[0].items[0].source, tmp_path)
    assert (missing.digest, missing.error) == (None, "`nope.jsonl` not found")


def test_hub_sources_compare_by_name_split_revision_only(tmp_path):
    spec = BASE.replace("\ntemplate", '\ndata faq = hf_dataset("org/faq", revision = "v1")\n\ntemplate')
    a, _ = load_spec(project(tmp_path, "a", spec))
    b, _ = load_spec(project(tmp_path, "b", spec.replace('"v1"', '"v2"')))
    old, new = fingerprint_pair(a, None, b, None)
    assert old["faq"].rows is None and old["faq"].digest != new["faq"].digest
    result = diff_specs(a, b, old, new)
    assert [(c.kind, c.path, c.category) for c in result.changes] == [("changed", "data.faq", "source")]


# ---------------------------------------------------------------- git revisions


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_rev_path_reads_spec_used_files_and_data_at_the_revision(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    write(
        repo,
        {
            "specs/base.sft": BASE.replace('"data/', '"../data/'),
            "specs/child.sft": 'use "base.sft"\n',
            "data/tickets.jsonl": rows(3),
        },
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    write(
        repo,
        {
            "specs/base.sft": BASE.replace('"data/', '"../data/').replace("epochs    = 3", "epochs    = 5"),
            "data/tickets.jsonl": rows(5),
        },
    )
    monkeypatch.chdir(repo / "specs")
    code, out, _ = run_diff(capsys, "HEAD:child.sft", "child.sft")
    assert code == 1
    assert change_lines(out) == [
        "~ data tickets content changed: 3 -> 5 rows (+2, -0)",
        "~ train.epochs 3 -> 5",
        "1 setting changed, 1 data change.",
    ]
    assert run_diff(capsys, "HEAD:child.sft", "HEAD:child.sft")[:2] == (0, "no changes\n")
    code, _, err = run_diff(capsys, "nosuchrev:child.sft", "child.sft")
    assert code == 2 and "`nosuchrev` is not a git revision" in err


# ---------------------------------------------------------------- output and exit codes


def test_json_output_shape(tmp_path, capsys):
    a = project(tmp_path, "a", BASE, rows(2))
    b = project(
        tmp_path,
        "b",
        BASE.replace("1e-4", "5e-5")
        .replace("### Answer:", "Answer:")
        .replace("\ntemplate", '\ndata faq = hf_dataset("org/faq")\n\ntemplate'),
        rows(3),
    )
    code, out, _ = run_diff(capsys, a, b, "--format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["same"] is False
    assert report["summary"] == "2 settings changed, 1 source added, 1 data change."
    by_path = {(c["path"], c["category"]): c for c in report["changes"]}
    assert by_path["train.optimizer.lr", "setting"] == {
        "kind": "changed",
        "path": "train.optimizer.lr",
        "category": "setting",
        "old": "1e-4",
        "new": "5e-5",
    }
    assert by_path["data.faq", "source"]["kind"] == "added"
    assert by_path["data.faq", "source"]["new"] == 'hf_dataset("org/faq", split = "train")'
    prompt = by_path["template.answer.prompt", "setting"]
    assert prompt["text_diff"] == [" ### Question:", " {question}", "-### Answer:", "+Answer:", " "]
    content = by_path["data.tickets", "data"]
    assert content["rows"] == {"old": 2, "new": 3, "added": 1, "removed": 0}
    assert content["old"].startswith("sha256:") and content["old"] != content["new"]
    code, out, _ = run_diff(capsys, a, a, "--format", "json")
    assert (code, json.loads(out)["same"], json.loads(out)["changes"]) == (0, True, [])


def test_unresolvable_spec_exits_2_with_diagnostics(tmp_path, capsys):
    a = project(tmp_path, "a", BASE)
    b = project(tmp_path, "b", BASE.replace("epochs    = 3", "epohcs    = 3"))
    code, out, err = run_diff(capsys, a, b)
    assert code == 2 and out == ""
    assert "unknown" in err and "epohcs" in err and "spec.sft:17:5" in err
    code, out, err = run_diff(capsys, a, tmp_path / "missing.sft")
    assert code == 2 and "not found" in err


def test_run_directories_diff_their_spec(tmp_path, capsys):
    a = project(tmp_path, "run1", BASE)
    b = project(tmp_path, "run2", BASE.replace("epochs    = 3", "epochs    = 4"))
    code, out, _ = run_diff(capsys, a.parent, b.parent)
    assert code == 1 and change_lines(out)[0] == "~ train.epochs 3 -> 4"


def test_diff_result_is_plain_data(tmp_path):
    a, _ = load_spec(project(tmp_path, "a", BASE))
    b, _ = load_spec(project(tmp_path, "b", BASE.replace("1e-4", "1e-5")))
    result = diff_specs(a, b)
    assert not result.same
    assert render_human(result).splitlines() == ["~ train.optimizer.lr  1e-4 -> 1e-5", "1 setting changed."]


def test_installed_console_script(tmp_path):
    sftc = shutil.which("sftc", path=str(Path(sys.executable).parent)) or shutil.which("sftc")
    assert sftc is not None, "the `sftc` console script is not installed"
    a = project(tmp_path, "a", BASE)
    b = project(tmp_path, "b", BASE.replace("epochs    = 3", "epochs    = 2"))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    same = subprocess.run([sftc, "diff", str(a), str(a)], capture_output=True, text=True, env=env)
    assert (same.returncode, same.stdout) == (0, "no changes\n")
    done = subprocess.run([sftc, "diff", str(a), str(b)], capture_output=True, text=True, env=env)
    assert done.returncode == 1, done.stderr
    assert change_lines(done.stdout) == ["~ train.epochs 3 -> 2", "1 setting changed."]


def test_source_transforms_and_template_shapes_show(tmp_path, capsys):
    chat = "template answer for tickets {\n    messages = conversations\n    roles = (bot = assistant)\n}"
    template = BASE[BASE.index("template answer") : BASE.index("train {")].strip()
    a = project(tmp_path, "a", BASE.replace(template, chat))
    body = (
        "    split eval = 5% seed 7\n"
        "    rename = (dialog = conversations)\n"
        '    where = ("meta.lang" = ["en", "de"])\n'
        '    system = "Be kind."\n'
    )
    edited = chat.replace("(bot = assistant)", "(bot = assistant, customer = user)") + "\n"
    edited = edited.replace("roles", "keys = (role = speaker)\n    tools = functions\n    roles")
    b = project(tmp_path, "b", BASE.replace(template, edited).replace("    split eval = 5% seed 7\n", body))
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == [
        "+ data tickets.rename (dialog = conversations)",
        '+ data tickets.where ("meta.lang" = ["en", "de"])',
        '+ data tickets.system "Be kind."',
        "~ template answer.roles (bot = assistant) -> (bot = assistant, customer = user)",
        "+ template answer.keys (role = speaker)",
        "+ template answer.tools functions",
        "1 setting changed, 5 settings added.",
    ]
    same = project(
        tmp_path,
        "c",
        BASE.replace(template, chat.replace("roles = (bot = assistant)", "roles    =   ( bot=assistant, )")),
    )
    code, out, _ = run_diff(capsys, a, same)
    assert code == 0


def test_template_format_shows(tmp_path, capsys):
    template = BASE[BASE.index("template answer") : BASE.index("train {")].strip()
    a = project(tmp_path, "a", BASE.replace(template, "template answer for tickets {\n    format = alpaca\n}"))
    b = project(tmp_path, "b", BASE.replace(template, "template answer for tickets {\n    format = tokens\n}"))
    code, out, _ = run_diff(capsys, a, b)
    assert code == 1
    assert change_lines(out) == ["~ template answer.format alpaca -> tokens", "1 setting changed."]

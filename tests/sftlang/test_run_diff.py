"""`sftc diff RUN_A RUN_B`: the spec diff plus metric deltas (better/worse by each
metric's direction), changed data fingerprints and package versions."""

import json

from sftlang.cli import main

SPEC = (
    'sft "r"\n'
    "model {\n"
    '    base = hf("org/model")\n'
    "}\n"
    'data d = jsonl("{data}")\n'
    "train {\n"
    "    optimizer = adamw(lr = {lr})\n"
    "}\n"
)


def _run(root, name, lr, metrics, fingerprint, jax_version, report=None):
    run = root / name
    run.mkdir()
    (run / "spec.sft").write_text(SPEC.replace("{data}", str(root / "d.jsonl")).replace("{lr}", lr))
    (run / "plan.json").write_text("{}")
    (run / "report.json").write_text(json.dumps({"metrics": metrics, **(report or {})}))
    manifest = {
        "data": {"fingerprints": {"d": fingerprint}},
        "packages": {"jax": jax_version},
        "devices": {"count": 1, "kind": "cpu"},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_run_diff_shows_metric_deltas_with_direction(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    a = _run(
        tmp_path, "v2", "2e-5", {"loss": 1.31, "rouge_l": 0.41, "mean_tokens": 50, "loss(d)": 1.31}, "aaa", "0.10.2"
    )
    b = _run(
        tmp_path, "v3", "1e-5", {"loss": 1.12, "rouge_l": 0.40, "mean_tokens": 55, "loss(d)": 1.12}, "bbb", "0.10.3"
    )
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "~ train.optimizer.lr  2e-5 -> 1e-5" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert lines["loss"].split()[-2:] == ["-0.19", "better"]
    assert lines["rouge_l"].split()[-2:] == ["-0.01", "worse"]
    assert lines["mean_tokens"].split()[-1] == "changed"
    assert "loss(d)" not in lines  # one source equal to the overall value: not repeated
    assert "~ data d  fingerprint aaa -> bbb" in out and "~ package jax  0.10.2 -> 0.10.3" in out


def test_identical_runs_are_the_same(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    a = _run(tmp_path, "a", "2e-5", {"loss": 1.0}, "x", "1")
    b = _run(tmp_path, "b", "2e-5", {"loss": 1.0}, "x", "1")
    assert main(["diff", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["same"] is True and out["runs"]["metrics"][0]["verdict"] == "same"
    assert out["runs"]["audit"] is None  # neither run recorded an audit


def test_run_diff_shows_each_run_against_its_baseline_and_changed_answers(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    sample = lambda line, text: {"source": "d", "file": "d.jsonl", "line": line, "generated": text}  # noqa: E731
    a = _run(
        tmp_path,
        "a",
        "2e-5",
        {"rouge_l": 0.40, "gain(rouge_l)": 0.10},
        "x",
        "1",
        {"baseline": {"metrics": {"rouge_l": 0.30}}, "samples": [sample(1, "yes"), sample(2, "no")]},
    )
    b = _run(
        tmp_path,
        "b",
        "1e-5",
        {"rouge_l": 0.45, "gain(rouge_l)": 0.15},
        "x",
        "1",
        {"baseline": {"metrics": {"rouge_l": 0.30}}, "samples": [sample(2, "no"), sample(1, "maybe")]},
    )
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():  # the first line of each metric: the metric table's
        if line.split():
            lines.setdefault(line.split()[0], line)
    assert lines["gain(rouge_l)"].split()[-1] == "better"  # a gain is better when it grows
    assert lines["rouge_l"].split()[-1] == "better"
    vs = [line for line in out.splitlines() if line.startswith("rouge_l ") and "->" in line]
    assert vs and "0.3 -> 0.4 (+0.1)" in vs[0] and "0.3 -> 0.45 (+0.15)" in vs[0]
    assert "answers: 1 of 2 eval samples answered differently" in out
    assert main(["diff", str(a), str(b), "--format", "json"]) == 1
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert runs["baselines"] == [{"metric": "rouge_l", "old": [0.3, 0.4], "new": [0.3, 0.45]}]
    assert runs["answers_changed"] == [1, 2]


# ---------------------------------------------------------------- the data audit (RUN/audit.json)

WORDS = (
    "order refund parcel invoice courier warranty battery screen account password delivery address "
    "receipt discount voucher return exchange charger keyboard speaker subscription tracking"
).split()


def _text(n: int) -> str:
    """A prompt unlike every other `n`'s: no 5-character shingles in common beyond a few."""
    return " ".join(f"{WORDS[(n * 7 + k * 3) % len(WORDS)]}{n * 31 + k}" for k in range(12))


def _audit_json(rows: list[tuple[str, str, int, str, str]]) -> str:
    """RUN/audit.json as `sftc run` writes it: the audit of (source, split, line, prompt, answer) rows."""
    from runtime.audit.audit_report import AuditSettings, audit
    from runtime.audit.audited_example import AuditedExample
    from runtime.plan.sample_origin import sample_id

    examples = []
    for source, split, line, prompt, answer in rows:
        file = f"{source}-{split}.jsonl"
        examples.append(
            AuditedExample(sample_id(source, file, line), source, split, f"{file}:{line}", prompt, answer, 40, 40)
        )
    return json.dumps(audit(examples, AuditSettings(coverage=False)).to_dict())


def _rows(leak: bool, support_copies: int, near_members: int) -> list[tuple[str, str, int, str, str]]:
    """Two sources: `faq` with one exact duplicate (lines 1 and 5) and a near-copy group of
    `near_members` rows that all keep line 6 first; `support` with `support_copies` exact
    duplicates of distinct rows, and its eval row 1 copied into training line 9 when `leak`."""
    faq = [("faq", "train", n, _text(n), f"answer {n}") for n in range(1, 5)]
    faq.append(("faq", "train", 5, _text(1), "answer 1"))
    near = "please check the delivery status of my parcel number 4821 which was shipped to the warehouse"
    faq += [("faq", "train", 6 + k, near.replace("4821", f"482{k + 1}"), "it ships today") for k in range(near_members)]
    support = [("support", "train", n, _text(100 + n), f"reply {n}") for n in range(1, 5)]
    support += [("support", "train", 10 + k, _text(101 + k), f"reply {k + 1}") for k in range(support_copies)]
    support.append(("support", "eval", 1, _text(200), "reply 200"))
    if leak:
        support.append(("support", "train", 9, _text(200), "reply 200"))
    return faq + support


def _run_with_audit(root, name, rows):
    run = _run(root, name, "2e-5", {"loss": 1.0}, "x", "1")
    if rows is not None:
        (run / "audit.json").write_text(_audit_json(rows))
    return run


def test_audit_kinds_are_the_audits_own():
    from runtime.audit.audit_report import KINDS
    from sftlang.run_diff import AUDIT_KINDS

    assert AUDIT_KINDS == KINDS


def test_run_diff_shows_findings_fixed_new_and_changed(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    a = _run_with_audit(tmp_path, "v2", _rows(leak=True, support_copies=0, near_members=2))
    b = _run_with_audit(tmp_path, "v3", _rows(leak=False, support_copies=4, near_members=3))
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    lines = [line.rstrip() for line in out.splitlines()]
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["audit", "v2", "v3"])
    table = {}
    for line in lines[header + 1 :]:
        if line.startswith(("audit findings", " ")):
            break
        table[line.split()[0]] = line.split()[1:]
    assert table["duplicate"] == ["1", "5", "+4", "worse"]
    assert table["duplicate(support)"] == ["0", "4", "+4", "worse"]  # faq's stays 1: not listed
    assert table["leak"] == ["1", "0", "-1", "better"]
    assert "leak(support)" not in table  # the one source's figures are the overall ones
    assert "near_duplicate" not in table  # one group before and after
    assert "audit findings: 1 fixed, 1 changed, 4 new" in out
    assert (
        "  fixed    leak (exact): the eval row is an exact copy of 1 training row; "
        "2 rows: support-eval.jsonl:1; support-train.jsonl:9" in lines
    )
    changed = next(line for line in lines if line.startswith("  changed  near duplicate: 3 training rows"))
    assert changed.endswith("; gained 1 row: faq-train.jsonl:8")
    new = [line for line in lines if line.startswith("  new      duplicate: 2 training rows have the same text")]
    assert len(new) == 3 and new[0].endswith("2 rows: support-train.jsonl:1; support-train.jsonl:10")
    assert "  +1 more new" in lines

    assert main(["diff", str(a), str(b), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    audit = report["runs"]["audit"]
    assert report["same"] is False and audit["missing"] == []
    assert {(c["source"], c["kind"]): (c["old"], c["new"]) for c in audit["counts"]} == {
        ("all", "duplicate"): (1, 5),
        ("support", "duplicate"): (0, 4),
        ("all", "leak"): (1, 0),
    }
    assert [f["ids"] for f in audit["fixed"]] == [["support:support-eval.jsonl:1", "support:support-train.jsonl:9"]]
    assert len(audit["new"]) == 4 and {f["kind"] for f in audit["new"]} == {"duplicate"}
    assert audit["changed"][0]["gained"] == ["faq:faq-train.jsonl:8"] and audit["changed"][0]["lost"] == []


def test_a_run_without_an_audit_is_said_in_one_line(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    old = _run_with_audit(tmp_path, "old", None)  # ran before sftc audited the data
    new = _run_with_audit(tmp_path, "new", _rows(leak=True, support_copies=2, near_members=2))
    assert main(["diff", str(old), str(new)]) == 0  # nothing compared, so nothing differs
    out = capsys.readouterr().out
    audit_lines = [line for line in out.splitlines() if "audit" in line]
    assert audit_lines == ["no audit recorded in old: it ran before sftc audited the data"]
    assert main(["diff", str(old), str(new), "--format", "json"]) == 0
    audit = json.loads(capsys.readouterr().out)["runs"]["audit"]
    assert audit["missing"] == [{"run": "old", "why": "absent"}] and audit["counts"] == audit["new"] == []


def test_identical_audits_print_nothing(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    rows = _rows(leak=True, support_copies=2, near_members=2)
    a, b = _run_with_audit(tmp_path, "a", rows), _run_with_audit(tmp_path, "b", rows)
    assert json.loads((a / "audit.json").read_text())["findings"]  # there are findings, the same ones
    assert main(["diff", str(a), str(b)]) == 0
    assert "audit" not in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["same"] is True
    assert out["runs"]["audit"] == {"missing": [], "counts": [], "settings": [], "fixed": [], "changed": [], "new": []}

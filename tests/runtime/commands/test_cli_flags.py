"""The command line's flags, driven through `sftlang.cli.main` as a user types them: `sftc run
--export` of a rejected run, `--step N` of generate / eval / export, generate's sampling flags,
`review --blind / --reviewer`, `plan` and `preview` failing with exit 1, and `preview --source`.

One tiny run is trained per module (its gate cannot hold, so `sftc run --export` is what exports
it); every other test uses it or needs no run at all."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from sftlang.cli import main
from tests.runtime.run_helpers import SPEC, write_project

# every test shares one trained run (about 40 s on 2 cores): the default suite stays under five minutes
pytestmark = pytest.mark.slow

# A gate no 12-step run meets: `sftc run` rejects it, exit 3.
REJECTED = SPEC.replace(
    "output {\n",
    "eval {\n    generate = greedy(max_new_tokens = 3)\n}\naccept {\n    loss <= 0.0001\n}\noutput {\n",
)
ROWS = '{"a": "two", "b": "three"}\n{"a": "one", "b": "one"}\n{"a": "nine", "b": "four"}\n'


@pytest.fixture(scope="module")
def rejected(tmp_path_factory):
    """(project, run_dir, exit code, stderr) of `sftc run --export` of a run whose gate fails;
    checkpoints at steps 4, 8 and 12. The working directory and SFTC_CACHE are the project's for
    the module's tests and restored after them (or when this setup fails)."""
    root = tmp_path_factory.mktemp("flags")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("SFTC_CACHE", str(root / "cache"))
        write_project(root)
        (root / "tiny.sft").write_text(REJECTED)
        (root / "rows.jsonl").write_text(ROWS)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["run", "tiny.sft", "--export"])
        assert (root / "runs" / "tiny").is_dir(), err.getvalue()
        (run_dir,) = sorted((root / "runs" / "tiny").iterdir())
        yield root, run_dir, code, _unwrapped(err.getvalue())


def _unwrapped(text: str) -> str:
    """The terminal's text with rich's line wrapping undone (every run of whitespace: one space)."""
    return " ".join(text.split())


# ------------------------------------------------------------------ sftc run --export


def test_a_rejected_run_still_exports_with_export_and_says_so_once(rejected):
    _, run_dir, code, err = rejected
    assert code == 3, err  # the gate failed: rejected, whatever --export does
    assert json.loads((run_dir / "report.json").read_text())["accepted"] is False
    assert (run_dir / "export" / "config.json").is_file() and (run_dir / "export" / "model.safetensors").is_file()
    assert err.count("exported because --export asked") == 1, err
    assert err.count(f"export: {run_dir / 'export'}") == 1, err
    assert "no export" not in err  # the line a rejected run without --export prints


# ------------------------------------------------------------------ --step N


def _spy_loaded_steps(monkeypatch) -> list[int]:
    """The step of every run the commands load (through `runtime.commands.load`)."""
    import runtime.runs.trained_run as trained_run

    original, steps = trained_run.load_trained, []

    def spy(run_dir, step=None):
        loaded = original(run_dir, step)
        steps.append(loaded.step)
        return loaded

    monkeypatch.setattr(trained_run, "load_trained", spy)
    return steps


def test_generate_at_a_chosen_step_loads_that_checkpoint(rejected, monkeypatch, capsys):
    root, run_dir, _, _ = rejected
    steps = _spy_loaded_steps(monkeypatch)
    assert main(["generate", str(run_dir), "--file", "rows.jsonl", "--json", "--step", "4"]) == 0
    assert main(["generate", str(run_dir), "--file", "rows.jsonl", "--json"]) == 0
    assert steps == [4, 12]  # the chosen one, then the latest
    assert len([line for line in capsys.readouterr().out.splitlines() if line]) == 2 * 3


def test_eval_at_a_chosen_step_reports_that_step(rejected, capsys):
    _, run_dir, _, _ = rejected
    before = set((run_dir / "evals").iterdir()) if (run_dir / "evals").is_dir() else set()
    assert main(["eval", str(run_dir), "--step", "8"]) == 3  # the run's own gate still fails
    (new,) = set((run_dir / "evals").iterdir()) - before
    assert json.loads((new / "report.json").read_text())["facts"]["step"] == 8
    assert "loss" in capsys.readouterr().err


def test_export_at_a_chosen_step_writes_that_checkpoints_weights(rejected, capsys):
    from safetensors.numpy import load_file

    root, run_dir, _, _ = rejected
    assert main(["export", str(run_dir), "--step", "4", str(root / "step4")]) == 0
    assert f"exported step 4 of {run_dir}" in _unwrapped(capsys.readouterr().err)
    early = load_file(root / "step4" / "model.safetensors")
    final = load_file(run_dir / "export" / "model.safetensors")  # step 12, exported by `sftc run`
    assert early.keys() == final.keys()
    assert any((early[k] != final[k]).any() for k in early)  # 8 more steps of adamw at lr 1e-2 moved them


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "{run}", "--file", "rows.jsonl"],
        ["eval", "{run}"],
        ["export", "{run}", "out-99"],
    ],
    ids=["generate", "eval", "export"],
)
def test_an_unknown_step_is_a_clear_error(rejected, command, capsys):
    root, run_dir, _, _ = rejected
    argv = [str(run_dir) if part == "{run}" else part for part in command]
    assert main([*argv, "--step", "99"]) == 1
    err = _unwrapped(capsys.readouterr().err)
    assert "no checkpoint at step 99" in err and "checkpoints: 4, 8, 12" in err, err
    assert "unexpectedly" not in err and "Traceback" not in err
    assert not (root / "out-99").exists()


# ------------------------------------------------------------------ generate's sampling flags


def _generate(run_dir: Path, capsys, *flags: str) -> list[str]:
    assert main(["generate", str(run_dir), "--file", "rows.jsonl", "--json", "--max-new-tokens", "3", *flags]) == 0
    return [json.loads(line)["completion"] for line in capsys.readouterr().out.splitlines() if line]


def test_sampling_flags(rejected, capsys):
    _, run_dir, _, _ = rejected
    greedy = _generate(run_dir, capsys)  # the spec's eval.generate: greedy
    assert len(greedy) == 3
    assert _generate(run_dir, capsys, "--temperature", "0") == greedy
    hot = ["--temperature", "2.0", "--seed", "7"]
    assert _generate(run_dir, capsys, *hot) == _generate(run_dir, capsys, *hot)  # the same seed, the same text


@pytest.mark.slow  # three more sampling compilations
def test_sampling_filters_reach_the_sampler(rejected, capsys):
    _, run_dir, _, _ = rejected
    greedy = _generate(run_dir, capsys)
    hot = ["--temperature", "2.0"]
    assert len(_generate(run_dir, capsys, *hot, "--seed", "8")) == 3  # another seed may differ; it still samples
    # keeping only the likeliest token is greedy, at any temperature
    assert _generate(run_dir, capsys, *hot, "--top-k", "1", "--seed", "3") == greedy
    assert _generate(run_dir, capsys, *hot, "--top-p", "1e-9", "--seed", "3") == greedy


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "-0.5"], "temperature must be >= 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--top-k", "-1"], "top_k must be >= 0"),
    ],
)
def test_bad_sampling_values_are_refused(rejected, flags, message, capsys):
    _, run_dir, _, _ = rejected
    assert main(["generate", str(run_dir), "--file", "rows.jsonl", *flags]) == 2
    captured = capsys.readouterr()
    assert message in _unwrapped(captured.err) and captured.out == ""


def test_a_sampling_flag_that_is_not_a_number_is_a_usage_error(rejected, capsys):
    _, run_dir, _, _ = rejected
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(run_dir), "--file", "rows.jsonl", "--top-k", "many"])
    assert exit_.value.code == 2 and "--top-k" in capsys.readouterr().err


# ------------------------------------------------------------------ review --blind / --reviewer


def _review_app(monkeypatch, run_dir: Path, *flags: str):
    """The app `sftc review RUN FLAGS` would serve (the server is not started)."""
    import runtime.review.app as review_app

    served = []
    monkeypatch.setattr(review_app, "serve", lambda app, host, port, ready=None: served.append(app))
    assert main(["review", str(run_dir), "--port", "0", *flags]) == 0
    (app,) = served
    return app


@pytest.fixture()
def review_run(tmp_path):
    from tests.runtime.review.test_server import write_run

    return write_run(tmp_path / "run")  # three rows, each with the tuned and the base answer


def _shown(html: str) -> dict[str, list[tuple[str, str]]]:
    """Each row's answers as the page shows them, in order: [(slot, sha of the text)]."""
    import re

    sections = re.findall(r'<section class="row"[^>]* data-row="([^"]+)"(.*?)</section>', html, re.S)
    return {row: re.findall(r'data-slot="([^"]+)" data-sha="([^"]+)"', body) for row, body in sections}


def test_review_blind_serves_each_row_as_a_b_in_its_own_order(tmp_path, monkeypatch):
    from runtime.review.rows import blind_order, load_rows
    from tests.runtime.review.test_server import sample, write_run

    run = write_run(tmp_path / "run", samples=[sample("faq", i, f"tuned {i}") for i in range(1, 13)])
    app = _review_app(monkeypatch, run, "--blind", "--reviewer", "ann")
    html = app.test_client().get("/").get_data(as_text=True)
    assert "Tuned answer" not in html and "Base answer" not in html  # nothing says which is which
    rows = load_rows(run).rows
    shown = _shown(html)
    assert set(shown) == {row.id for row in rows}
    for row in rows:
        first, second = blind_order(row.id, "ann")  # this reviewer's order of this row
        assert shown[row.id] == [("A", row.sha(first)), ("B", row.sha(second))], row.id
    assert {blind_order(row.id, "ann") for row in rows} == {("tuned", "base"), ("base", "tuned")}  # per row
    plain = _review_app(monkeypatch, run, "--reviewer", "ann").test_client().get("/").get_data(as_text=True)
    assert all(
        answers == [("tuned", row.sha("tuned")), ("base", row.sha("base"))]
        for row in rows
        for answers in [_shown(plain)[row.id]]
    )


def test_review_reviewer_records_every_judgement_under_that_name(review_run, monkeypatch):
    from runtime.review.store import ReviewStore, answer_sha
    from tests.runtime.review.test_server import body

    client = _review_app(monkeypatch, review_run, "--reviewer", "ann").test_client()
    page = client.get("/").get_data(as_text=True)
    assert "ann" in page
    saved = client.post("/api/judgements", json=body(reviewer="ann", score=5))
    assert saved.status_code == 200, saved.get_json()
    other = client.post("/api/judgements", json=body(reviewer="bob", score=1))
    assert other.status_code == 400 and "'ann' only" in other.get_json()["error"]
    store = ReviewStore(review_run, create=False)
    judgements = [j for j in store.history()]
    assert [(j.reviewer, j.score, j.answer_sha) for j in judgements] == [("ann", 5, answer_sha("four"))]


def test_review_refuses_a_reviewer_name_it_cannot_record(review_run, capsys):
    assert main(["review", str(review_run), "--reviewer", "   "]) == 2
    assert "--reviewer" in capsys.readouterr().err


# ------------------------------------------------------------------ plan / preview: exit 1, --source


@pytest.mark.parametrize("command", ["plan", "preview"])
def test_plan_and_preview_of_an_invalid_spec_exit_1(project, command, capsys):
    (project / "tiny.sft").write_text(SPEC.replace("batch = 8", "batch = 7"))
    assert main([command, "tiny.sft"]) == 1
    captured = capsys.readouterr()
    assert "E052" in captured.err and "nothing ran" in captured.err
    assert captured.out == "" and not (project / "cache" / "data").exists()


@pytest.mark.parametrize("command", ["plan", "preview"])
def test_plan_and_preview_of_an_unreadable_tokenizer_exit_1(project, command, capsys):
    (project / "tok" / "tokenizer.json").write_text("{not json")  # `sftc check` does not open it; preparing does
    assert main(["check", "tiny.sft"]) == 0
    capsys.readouterr()
    assert main([command, "tiny.sft"]) == 1
    err = _unwrapped(capsys.readouterr().err)
    assert "cannot load the tokenizer" in err and "unexpectedly" not in err, err


@pytest.mark.parametrize("command", ["plan", "preview"])
def test_plan_and_preview_of_a_data_file_gone_after_the_check_exit_1(project, command, monkeypatch, capsys):
    import sftlang.cli as cli

    checked = cli.compile_spec

    def check_then_lose_the_data(path, console, devices=None):
        compiled = checked(path, console, devices)
        (project / "sums.jsonl").unlink()  # removed between the check and the run
        return compiled

    monkeypatch.setattr(cli, "compile_spec", check_then_lose_the_data)
    assert main([command, "tiny.sft"]) == 1
    err = _unwrapped(capsys.readouterr().err)
    assert "sums.jsonl" in err and "unexpectedly" not in err, err


TWO_SOURCES = SPEC.replace(
    "template add for sums {",
    'data twice = jsonl("twice.jsonl")\ntemplate double for twice {\n'
    '    prompt = "twice {a} is "\n    completion = "{c}"\n}\ntemplate add for sums {',
)


def test_preview_source_shows_only_that_sources_examples(project, capsys):
    from tests.runtime.run_helpers import NUMBERS

    rows = [{"a": NUMBERS[a], "c": NUMBERS[(2 * a) % 10]} for a in range(10)] * 4
    (project / "twice.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "tiny.sft").write_text(TWO_SOURCES)
    for source in ("twice", "sums"):
        assert main(["preview", "tiny.sft", "--source", source, "-n", "4", "--json"]) == 0, capsys.readouterr().err
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert len(records) == 4 and {r["source"] for r in records} == {source}
    assert main(["preview", "tiny.sft", "--source", "nope"]) == 2
    captured = capsys.readouterr()
    err = _unwrapped(captured.err)
    assert "no trained source `nope`" in err and "twice" in err and "sums" in err
    assert captured.out == ""

"""The `sftc review` app through Flask's test client (escaping, the token, refusals of bad
submissions, concurrent reviewers, blind mode) and the real server process (SIGKILL after
acknowledged writes loses nothing; a public address without a token is refused)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runtime.review.app import MAX_BODY, TOKEN_HEADER, create_app
from runtime.review.rows import blind_order, load_rows
from runtime.review.store import ReviewStore, answer_sha

SCRIPT = "<script>alert(1)</script>"
FP = {"faq": "f" * 64, "chat": "c" * 64}
ROOT = Path(__file__).resolve().parents[3]


def sample(source, line, generated, file="/data/eval.jsonl"):
    return {
        "source": source,
        "file": file,
        "line": line,
        "prompt": f"<s> question {line} & <b>bold</b>",
        "reference": f"answer {line}",
        "generated": generated,
        "tokens": 3,
        "finished": True,
    }


def write_run(run_dir: Path, base: bool = True, samples: list[dict] | None = None) -> Path:
    if samples is None:
        samples = [sample("faq", 1, SCRIPT), sample("faq", 2, "four"), sample("chat", 3, "hi", "/data/chat.jsonl")]
    report = {"samples": samples}
    if base:
        report["baseline"] = {
            "kind": "base",
            "samples": [dict(s, generated=f"base {i}") for i, s in enumerate(samples)],
        }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report))
    (run_dir / "manifest.json").write_text(json.dumps({"data": {"fingerprints": FP}}))
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("review") / "run")


def client(run_dir, **options):
    return create_app(load_rows(run_dir), **options).test_client()


def body(row="faq:eval.jsonl:2", reviewer="ann", score=4, answer="tuned", text="four", note="", flagged=False, **extra):
    answers = {answer: {"score": score, "flagged": flagged, "note": note, "sha": answer_sha(text)}}
    return {"row": row, "reviewer": reviewer, "answers": answers, **extra}


def test_untrusted_text_is_escaped_and_no_inline_script_may_run(run_dir):
    page = client(run_dir).get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert html.count("<script") == 1 and 'src="/static/review.js"' in html  # the app's own file, nothing inline
    js = client(run_dir).get("/static/review.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert "innerHTML" not in js.get_data(as_text=True)
    assert "Tuned answer" in html and "Base answer" in html and "1 – 5" in html  # side by side, keys documented


def test_a_token_is_required_on_every_request(run_dir):
    c = client(run_dir, token="s3cret-token-0123456789")
    for response in (
        c.get("/"),
        c.get("/static/review.js"),
        c.post("/api/judgements", json=body()),
        c.get("/?token=wrong"),
        c.get("/", headers={TOKEN_HEADER: "wrong"}),
    ):
        assert response.status_code == 403 and "token" in response.get_json()["error"]
    assert c.get("/", headers={TOKEN_HEADER: "s3cret-token-0123456789"}).status_code == 200
    first = c.get("/?token=s3cret-token-0123456789")  # once in the URL: a cookie, and the URL loses it
    assert first.status_code == 303 and first.headers["Location"].endswith("/")
    assert "HttpOnly" in first.headers["Set-Cookie"] and "SameSite=Strict" in first.headers["Set-Cookie"]
    assert c.get("/").status_code == 200 and c.get("/api/progress").status_code == 200


def test_without_a_token_only_loopback_host_names_are_answered(run_dir):
    c = client(run_dir)
    assert c.get("/", headers={"Host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    assert c.get("/", headers={"Host": "127.0.0.1:8765"}).status_code == 200


@pytest.mark.parametrize(
    "payload, status, message",
    [
        (body(score=6), 400, "score must be a whole number from 1 to 5"),
        (body(score="4"), 400, "score must be a whole number"),
        (body(row="faq:eval.jsonl:99"), 404, "unknown row"),
        (body(reviewer=None), 400, "reviewer name is required"),
        (body(reviewer=""), 400, "reviewer name is required"),
        (body(answer="gold"), 400, "has no answer 'gold'"),
        (body(text="something else"), 409, "reload the page"),
        (body(correction="x" * (16 * 1024 + 1)), 413, "correction is over 16 KiB"),
        (body(answer="base", text="base 1", correction="fix"), 400, "saved with the tuned answer"),
        ([1, 2], 400, "not a JSON object"),
    ],
)
def test_malformed_submissions_are_refused_with_a_clear_json_error(run_dir, payload, status, message):
    response = client(run_dir).post("/api/judgements", json=payload)
    assert response.status_code == status and message in response.get_json()["error"]
    assert not ReviewStore(run_dir).history("faq:eval.jsonl:2")


def test_oversized_and_non_json_bodies_are_refused(run_dir):
    c = client(run_dir)
    big = json.dumps(body(note="x" * MAX_BODY))
    response = c.post("/api/judgements", data=big, content_type="application/json")
    assert response.status_code == 413 and "64 KiB" in response.get_json()["error"]
    form = c.post("/api/judgements", data={"row": "faq:eval.jsonl:2"})  # what another site's form could send
    assert form.status_code == 415 and "JSON" in form.get_json()["error"]


@pytest.mark.parametrize(
    "field, raw",
    [
        ("note", json.dumps(body(note="NOTE")).replace('"NOTE"', '"half an emoji \\ud83d"')),
        ("correction", json.dumps(body(correction="FIX")).replace('"FIX"', '"\\ud83d"')),
        ("reviewer", json.dumps(body(reviewer="NAME")).replace('"NAME"', '"ann\\udc00"')),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(run_dir, field, raw, caplog):
    """Pasting half of an emoji sends a lone UTF-16 surrogate: a clear 400, not a 500."""
    assert "\\ud" in raw  # the JSON text holds the escape; json.loads makes it a lone surrogate
    response = client(run_dir).post("/api/judgements", data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert field in error and "LONE SURROGATE" in error and "U+D" in error
    assert not ReviewStore(run_dir).history("faq:eval.jsonl:2")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 20000 + "]" * 20000,
        json.dumps(body(note="NOTE")).replace('"NOTE"', "[" * 5000 + "]" * 5000),
        '{"row": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}",
    ],
)
def test_deeply_nested_json_is_refused(run_dir, raw, caplog):
    response = client(run_dir).post("/api/judgements", data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "nested" in response.get_json()["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unexpected_failure_is_logged_and_answered_as_json(tmp_path, monkeypatch, caplog):
    def broken(self, judgements):
        raise RuntimeError("the disk is on fire")

    c = client(write_run(tmp_path / "run"))
    monkeypatch.setattr(ReviewStore, "add_many", broken)
    with caplog.at_level(logging.ERROR, logger="sftc"):
        response = c.post("/api/judgements", json=body())
    assert response.status_code == 500
    error = response.get_json()["error"]
    assert "RuntimeError: the disk is on fire" in error and "the traceback is in" in error
    (record,) = [r for r in caplog.records if r.name == "sftc" and r.levelno >= logging.ERROR]
    assert "/api/judgements" in record.getMessage() and record.exc_info[0] is RuntimeError


def test_the_real_server_logs_an_unexpected_failure_in_the_runs_sftc_log(tmp_path):
    run_dir = write_run(tmp_path / "run")
    server = _sftc("review", str(run_dir), "--port", "0")
    try:
        line = server.stdout.readline()
        assert line.startswith("review: http://127.0.0.1:"), line + server.stderr.read()
        for name in ("reviews.sqlite", "reviews.sqlite-wal", "reviews.sqlite-shm"):
            (run_dir / name).unlink(missing_ok=True)
        (run_dir / "reviews.sqlite").mkdir()  # the database cannot be opened any more
        request = urllib.request.Request(
            line.split()[1] + "api/judgements",
            method="POST",
            data=json.dumps(body()).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=10)
        error = json.loads(failed.value.read())["error"]
        assert failed.value.code == 500 and str(run_dir / "sftc.log") in error, error
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    log = (run_dir / "sftc.log").read_text()
    assert "POST /api/judgements failed" in log and "OperationalError" in log and "Traceback" in log


def test_a_reviewer_name_with_an_invisible_character_is_refused_naming_it(run_dir):
    c = client(run_dir)
    response = c.post("/api/judgements", json=body(reviewer="ann\u200b"))
    assert response.status_code == 400
    assert "U+200B ZERO WIDTH SPACE" in response.get_json()["error"]
    c.set_cookie("sftc_reviewer", "ann%E2%80%8B")  # what the page's cookie holds for "ann" + U+200B
    html = c.get("/").get_data(as_text=True)
    assert 'data-reviewer=""' in html
    assert "U+200B ZERO WIDTH SPACE" in html and "\u200b" not in html  # the reason is on the page


def test_review_reviewer_with_an_invisible_character_is_a_usage_error_naming_it(run_dir, capsys):
    from sftlang.cli import main

    assert main(["review", str(run_dir), "--reviewer", "ann\u202e"]) == 2
    assert "U+202E RIGHT-TO-LEFT OVERRIDE at character 4" in capsys.readouterr().err


INVISIBLE = "\u202e\u200b\u200c\u200d\u2060\ufeff\x00\u2066"


def test_invisible_characters_are_shown_as_marked_placeholders(tmp_path):
    hidden = dict(
        sample("faq", 1, "ok\u202edesrever\u2060 \x00end"),
        prompt="pay \u200b\u200c\u200dnow\ufeff",
        reference="ref\u2066x",
    )
    html = client(write_run(tmp_path / "run", samples=[hidden])).get("/").get_data(as_text=True)
    for char in INVISIBLE:
        assert char not in html
        assert f'in the text">\u27e8U+{ord(char):04X}\u27e9</span>' in html, f"U+{ord(char):04X}"
    assert 'title="U+202E RIGHT-TO-LEFT OVERRIDE: an invisible character in the text"' in html
    assert 'title="U+0000 NULL: an invisible character in the text"' in html
    assert "desrever" in html and "pay " in html  # the visible text stays


def test_special_tokens_of_the_runs_tokenizer_are_marked(tmp_path):
    from tests.runtime.data_helpers import wordlevel_tokenizer

    run_dir = write_run(
        tmp_path / "run", samples=[dict(sample("faq", 1, "fine</s>"), reference="<|im_start|>assistant <s>x")]
    )
    tokenizer = wordlevel_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    html = client(run_dir).get("/").get_data(as_text=True)
    special = '<span class="special-token" title="special token of the tokenizer">{}</span>'
    assert special.format("&lt;s&gt;") + " question 1" in html  # the prompt's <s>
    assert special.format("&lt;|im_start|&gt;") + "assistant " + special.format("&lt;s&gt;") + "x" in html
    assert "fine" + special.format("&lt;/s&gt;") in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html  # markup that is no special token stays plain escaped text


def test_a_judgement_persists_and_shows_on_reload(tmp_path):
    run_dir = write_run(tmp_path / "run")
    c = client(run_dir)
    payload = body(
        row="faq:eval.jsonl:1", text=SCRIPT, score=2, correction="the right answer", note="<i>n</i>", flagged=True
    )
    saved = c.post("/api/judgements", json=payload)
    assert saved.status_code == 200 and saved.get_json()["saved"] == 1
    assert saved.get_json()["progress"]["reviewed"] == 1
    again = c.post("/api/judgements", json=payload)  # the same state again: nothing new is stored
    assert again.get_json()["saved"] == 0
    (j,) = ReviewStore(run_dir).history()
    assert (
        j.row_id,
        j.answer,
        j.reviewer,
        j.score,
        j.flagged,
        j.correction,
        j.note,
        j.data_fingerprint,
        j.answer_sha,
    ) == ("faq:eval.jsonl:1", "tuned", "ann", 2, True, "the right answer", "<i>n</i>", FP["faq"], answer_sha(SCRIPT))
    c.set_cookie("sftc_reviewer", "ann")
    html = c.get("/").get_data(as_text=True)
    assert 'data-score="2" data-flagged="yes"' in html and "the right answer</textarea>" in html
    assert "&lt;i&gt;n&lt;/i&gt;</textarea>" in html
    c.set_cookie("sftc_reviewer", "bob")  # another reviewer sees their own (empty) judgements
    assert "the right answer" not in c.get("/").get_data(as_text=True)


def test_fixed_reviewer_takes_only_their_judgements(tmp_path):
    c = client(write_run(tmp_path / "run"), reviewer="ann")
    assert c.post("/api/judgements", json=body(reviewer="bob")).status_code == 400
    assert c.post("/api/judgements", json=body(reviewer="ann")).status_code == 200


def test_blind_mode_hides_which_answer_is_which(tmp_path):
    run_dir = write_run(tmp_path / "run")
    c = client(run_dir, blind=True)
    c.set_cookie("sftc_reviewer", "ann")
    html = c.get("/").get_data(as_text=True)
    assert "Answer A" in html and "Answer B" in html
    assert "Tuned answer" not in html and "Base answer" not in html and "by anyone" not in html
    orders = {blind_order(f"faq:eval.jsonl:{i}", reviewer) for i in range(40) for reviewer in ("ann", "bob")}
    assert orders == {("tuned", "base"), ("base", "tuned")}  # both orders occur
    assert blind_order("faq:eval.jsonl:2", "ann") == blind_order("faq:eval.jsonl:2", "ann")  # stable on reload
    first, second = blind_order("faq:eval.jsonl:2", "ann")
    texts = {"tuned": "four", "base": "base 1"}
    payload = {
        "row": "faq:eval.jsonl:2",
        "reviewer": "ann",
        "correction": "4",
        "answers": {
            "A": {"score": 5, "flagged": False, "note": "", "sha": answer_sha(texts[first])},
            "B": {"score": 1, "flagged": False, "note": "", "sha": answer_sha(texts[second])},
        },
    }
    assert c.post("/api/judgements", json=payload).status_code == 200
    saved = {j.answer: j for j in ReviewStore(run_dir).history()}
    assert saved[first].score == 5 and saved[second].score == 1 and saved["tuned"].correction == "4"
    assert c.post("/api/judgements", json=dict(payload, answers={"tuned": payload["answers"]["A"]})).status_code == 400


def test_two_reviewers_at_once_lose_nothing(tmp_path):
    run_dir = write_run(tmp_path / "run")
    app = create_app(load_rows(run_dir))
    errors: list = []

    def review(name):
        c = app.test_client()
        for i in range(30):
            response = c.post("/api/judgements", json=body(reviewer=name, score=1 + i % 5, note=f"pass {i}"))
            if response.status_code != 200:
                errors.append(response.get_json())

    threads = [threading.Thread(target=review, args=(name,)) for name in ("ann", "bob", "cy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = ReviewStore(run_dir).history()
    assert len(history) == 90
    assert {(j.reviewer, j.note) for j in ReviewStore(run_dir).current()} == {
        ("ann", "pass 29"),
        ("bob", "pass 29"),
        ("cy", "pass 29"),
    }


def _sftc(*args, **kw):
    """`sftc ARGS` as a terminal would start it: Ctrl-C (SIGINT) at its default, even when these
    tests themselves run in the background (where a shell ignores SIGINT for its children)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from sftlang.cli import main; sys.exit(main())", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )


def test_acknowledged_judgements_survive_a_killed_server(tmp_path):
    run_dir = write_run(tmp_path / "run")
    server = _sftc("review", str(run_dir), "--port", "0")
    try:
        line = server.stdout.readline()
        assert line.startswith("review: http://127.0.0.1:"), line + server.stderr.read()
        url = line.split()[1]
        for i in range(10):
            request = urllib.request.Request(
                url + "api/judgements",
                method="POST",
                data=json.dumps(body(score=1 + i % 5, note=f"n{i}")).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
    finally:
        server.send_signal(signal.SIGKILL)
        server.communicate(timeout=10)
    assert server.returncode == -signal.SIGKILL
    assert [j.note for j in ReviewStore(run_dir).history()] == [f"n{i}" for i in range(10)]


def test_a_public_address_without_a_token_is_refused(run_dir):
    from sftlang.cli import main

    assert main(["review", str(run_dir), "--host", "0.0.0.0"]) == 2
    assert main(["review", str(run_dir), "--host", "0.0.0.0", "--token", "short"]) == 2


def test_ctrl_c_stops_the_server_cleanly(tmp_path):
    server = _sftc("review", str(write_run(tmp_path / "run")), "--port", "0")
    line = server.stdout.readline()
    assert line.startswith("review: http://127.0.0.1:")
    server.send_signal(signal.SIGINT)
    _, err = server.communicate(timeout=10)
    assert server.returncode == 0 and "stopped" in err and "Traceback" not in err


def test_a_run_without_samples_is_a_clear_error(tmp_path):
    from sftlang.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(json.dumps({"samples": []}))
    assert main(["review", str(run_dir)]) == 1
    assert main(["review", str(tmp_path / "nothing")]) == 1


def test_an_answer_with_a_lone_surrogate_is_shown_and_judged(tmp_path):
    """A model's bytes decoded half a character can leave a lone surrogate in report.json: the
    page shows it as a placeholder and a judgement of that answer is stored (GET / was a 500)."""
    half = "cut \ud83d"
    c = client(write_run(tmp_path / "run", samples=[sample("faq", 1, half)]))
    page = c.get("/")
    assert page.status_code == 200 and "\u27e8U+D83D\u27e9" in page.get_data(as_text=True)
    saved = c.post("/api/judgements", json=body(row="faq:eval.jsonl:1", text=half, score=3))
    assert saved.status_code == 200 and saved.get_json()["saved"] == 1

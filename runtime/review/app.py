"""The review web page of `sftc review`: a Flask app over a run's eval rows and its
`reviews.sqlite`, served by waitress (`serve`).

Routes: ``GET /`` the page (rendered by Jinja2 with autoescaping: model outputs and data
are shown as text, never as markup), ``GET /static/...`` its script and style, ``GET
/api/progress`` and ``POST /api/judgements`` (one row's judgements of one reviewer,
committed to disk before the answer is sent). Errors of the API are JSON: ``{"error": "..."}``.

Security: every response carries a Content-Security-Policy that allows only the app's own
script and style files (no inline script can run, whatever the data holds). With a token,
every request must carry it (``?token=`` once, which sets a cookie, or the
``X-Review-Token`` header), else 403. Without one the server only answers requests
addressed to a loopback host name (a page elsewhere cannot reach it through DNS
rebinding), and the API takes only JSON bodies (a form of another site cannot post to it).
Bodies over 64 KiB are refused (413), JSON nested deeper than a judgement needs and text
holding a lone UTF-16 surrogate (400). A failure nobody foresaw is logged with its traceback
to the logger "sftc" (the run's `sftc.log` under `sftc review`) and answered with a JSON 500
that says so. Nothing is written but `RUN/reviews.sqlite` (and that log).

Text from the run is shown through `display.visible`: escaped, invisible characters as
marked placeholders, the tokenizer's special tokens marked.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections import Counter
from typing import Any
from urllib.parse import unquote

from flask import Flask, jsonify, make_response, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from runtime.review.display import describe, odd_character, special_tokens, visible
from runtime.review.rows import Row, RunRows, blind_order
from runtime.review.store import CORRECTION_MAX, NOTE_MAX, Judgement, ReviewStore, valid_reviewer
from runtime.review.summary import review_summary, valid_current

__all__ = ["MAX_BODY", "REVIEWER_COOKIE", "TOKEN_COOKIE", "TOKEN_HEADER", "create_app", "serve"]

MAX_BODY = 64 * 1024
TOKEN_COOKIE, TOKEN_HEADER, REVIEWER_COOKIE = "sftc_review_token", "X-Review-Token", "sftc_reviewer"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
JSON_DEPTH = 8  # a judgement is 3 levels deep: {"answers": {"tuned": {...}}}
_JSON_STRING, _JSON_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"'), re.compile(r"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def slots(row: Row, reviewer: str | None, blind: bool) -> list[tuple[str, str]]:
    """(slot, answer) of the answers of ``row`` in the order shown: ``tuned`` then ``base``,
    or in blind mode ``A`` and ``B`` in `blind_order` (a row without a base answer shows
    only the tuned one; blind or not, then, there is nothing to hide)."""
    if row.base is None:
        return [("A" if blind else "tuned", "tuned")]
    if not blind:
        return [("tuned", "tuned"), ("base", "base")]
    first, second = blind_order(row.id, reviewer or "")
    return [("A", first), ("B", second)]


def create_app(
    rows: RunRows,
    reviewer: str | None = None,
    blind: bool = False,
    token: str | None = None,
    bound_host: str = "127.0.0.1",
) -> Flask:
    """The app for ``rows``. ``reviewer``: every judgement is theirs (else each page asks);
    ``blind``: answers shown as A/B; ``token``: required on every request."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, JSON_SORT_KEYS=False, TEMPLATES_AUTO_RELOAD=False)
    store = ReviewStore(rows.run_dir)
    allowed_hosts = LOOPBACK | {bound_host}
    tokens = special_tokens(rows.run_dir / "tokenizer")
    app.jinja_env.filters["visible"] = lambda text: visible(text, tokens)

    def reviewer_of_request() -> str | None:
        if reviewer is not None:
            return reviewer
        name = unquote(request.cookies.get(REVIEWER_COOKIE, ""))
        return name if name and _reviewer_problem(name) is None else None

    @app.before_request
    def guard():
        if token is not None:
            given = request.args.get("token") or request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                return _error(
                    "a valid token is required: open the URL sftc review printed (it carries ?token=...)", 403
                )
            if request.args.get("token") and request.method == "GET":
                # the token moves into a cookie and out of the address bar, history and referrers
                response = redirect(request.path, code=303)
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
                return response
        elif _host_name(request.host) not in allowed_hosts:
            return _error(f"this server answers only requests to {bound_host} or localhost", 403)
        return None

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        message = error.description if error.code != 413 else f"the request body is over {MAX_BODY // 1024} KiB"
        return _error(message, error.code or 500)

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        return _error(error.message, error.status)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):  # a bug or a broken environment: never a silent 500
        logging.getLogger("sftc").error("review: %s %s failed", request.method, request.path, exc_info=error)
        where = _log_file() or 'the log of the logger "sftc"'
        return _error(
            f"the server failed unexpectedly ({type(error).__name__}: {error}); the traceback is in "
            f"{where}; please report it",
            500,
        )

    def progress(name: str | None) -> dict[str, Any]:
        judgements = store.history()
        current = valid_current(judgements, rows.samples, rows.base_samples, rows.fingerprints)
        total, mine = Counter(r.source for r in rows.rows), Counter()
        for row in rows.rows:
            answers = current.get(row.id, {})
            if name and all(
                answers.get(a, {}).get(name) is not None and answers[a][name].score is not None
                for _, a in slots(row, name, blind)
            ):
                mine[row.source] += 1
        out: dict[str, Any] = {
            "total": len(rows.rows),
            "mine": sum(mine.values()),
            "sources": [{"source": s, "total": total[s], "mine": mine[s]} for s in rows.sources],
        }
        if not blind:  # the gate's count: in blind mode it would tell which answer is the tuned one
            summary = review_summary(rows.run_dir, rows.samples, rows.base_samples, rows.fingerprints)
            out["reviewed"] = summary.reviewed
            for entry in out["sources"]:
                entry["reviewed"] = entry["total"] - summary.remaining_by_source.get(entry["source"], 0)
        return out

    @app.get("/")
    def page():
        name = reviewer_of_request()
        current = {}
        if name:
            for j in store.current(name):
                current[(j.row_id, j.answer)] = j
        shown = []
        for row in rows.rows:
            answers = []
            for slot, answer in slots(row, name, blind):
                j = current.get((row.id, answer))
                stale = j is not None and j.answer_sha != row.sha(answer)
                answers.append(
                    {
                        "slot": slot,
                        "label": f"Answer {slot}"
                        if blind
                        else ("Tuned answer" if answer == "tuned" else _base_label(rows.base_kind)),
                        "text": row.text(answer),
                        "sha": row.sha(answer),
                        "score": None if j is None or stale else j.score,
                        "flagged": bool(j and not stale and j.flagged),
                        "note": (j.note or "") if j and not stale else "",
                        "stale": stale,
                    }
                )
            tuned = current.get((row.id, "tuned"))
            shown.append(
                {"row": row, "answers": answers, "correction": (tuned.correction or "") if tuned is not None else ""}
            )
        cookie = unquote(request.cookies.get(REVIEWER_COOKIE, ""))
        refused = _reviewer_problem(cookie) if reviewer is None and cookie else None
        return render_template(
            "review.html",
            rows=shown,
            reviewer=name,
            fixed_reviewer=reviewer is not None,
            refused=refused and f"Your name was not taken: {refused}.",
            blind=blind,
            run=str(rows.run_dir),
            progress=progress(name),
            has_base=rows.base_samples is not None,
            base_kind=rows.base_kind,
        )

    @app.get("/api/progress")
    def api_progress():
        return jsonify(progress(reviewer_of_request()))

    @app.post("/api/judgements")
    def api_judgements():
        if not request.is_json:
            raise BadRequest("send the judgement as JSON (Content-Type: application/json)", 415)
        body = _json_body(request.get_data(cache=False))
        if not isinstance(body, dict):
            raise BadRequest("the body is not a JSON object")
        surrogate = _lone_surrogate(body)
        if surrogate:
            raise BadRequest(surrogate)
        name = body.get("reviewer")
        why = _reviewer_problem(name)
        if why:
            raise BadRequest(f"{why}: enter your name at the top of the page before saving")
        if reviewer is not None and name != reviewer:
            raise BadRequest(f"this server records the judgements of {reviewer!r} only (sftc review --reviewer)")
        row = rows.by_id(body.get("row")) if isinstance(body.get("row"), str) else None
        if row is None:
            raise BadRequest(f"unknown row {body.get('row')!r}", 404)
        given = body.get("answers")
        if not isinstance(given, dict) or not given:
            raise BadRequest("`answers` must be an object: slot -> {score, flagged, note, sha}")
        by_slot = dict(slots(row, name, blind))
        correction = body.get("correction")
        if correction is not None and not isinstance(correction, str):
            raise BadRequest("`correction` must be text")
        if correction is not None and len(correction) > CORRECTION_MAX:
            raise BadRequest(f"the correction is over {CORRECTION_MAX // 1024} KiB", 413)
        correction = correction if correction and correction.strip() else None
        previous = {j.answer: j for j in store.current(name) if j.row_id == row.id}
        wanted = []
        for slot, fields in given.items():
            if slot not in by_slot:
                raise BadRequest(f"row {row.id} has no answer {slot!r} (answers: {', '.join(by_slot)})")
            answer = by_slot[slot]
            wanted.append(_judgement(row, answer, slot, name, fields, correction if answer == "tuned" else None))
        if correction is not None and "tuned" not in {j.answer for j in wanted}:
            raise BadRequest("a correction is saved with the tuned answer: send its slot too")
        new = [j for j in wanted if _changed(j, previous.get(j.answer))]
        saved = store.add_many(new) if new else []
        return jsonify(
            {
                "ok": True,
                "saved": len(saved),
                "row": row.id,
                "created_at": saved[0].created_at if saved else None,
                "progress": progress(name),
            }
        )

    return app


def _base_label(kind: str | None) -> str:
    return "Base answer (few-shot)" if kind == "few_shot" else "Base answer"


def _log_file() -> str | None:
    """The file the root logger writes to (`runtime.platform.library_logs.route_library_logs`), if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(getattr(handler, "baseFilename", None), str):
            return handler.baseFilename
    return None


def _reviewer_problem(name: Any) -> str | None:
    """Why ``name`` is not a reviewer name (`valid_reviewer`), naming the character when it
    holds one that is invisible or not printable; None: it is one."""
    why = valid_reviewer(name)
    odd = odd_character(name) if why and isinstance(name, str) and name.strip() else None
    if odd:
        return f"the reviewer name holds an invisible or non-printable character, {odd}: type the name again without it"
    return why


def _json_body(data: bytes) -> Any:
    """The request body as JSON; 400 for text that is not UTF-8 or JSON, or JSON nested
    deeper than `JSON_DEPTH` (counted before parsing: the parser would recurse)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is not UTF-8 text (byte {error.start})") from None
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > JSON_DEPTH:
            raise BadRequest(
                f"the JSON body is nested deeper than {JSON_DEPTH} levels; a judgement is "
                f'{{"row", "reviewer", "answers": {{slot: {{score, flagged, note, sha}}}}, "correction"}}'
            )
    try:
        return json.loads(text)
    except RecursionError:
        raise BadRequest(f"the JSON body is nested deeper than {JSON_DEPTH} levels") from None
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON ({error})") from None


def _lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where ``value`` (parsed JSON, at most `JSON_DEPTH` deep) holds a lone UTF-16 surrogate
    (half of a character: pasting half of an emoji sends one), said for the page; None: nowhere."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found is None:
            return None
        return (
            f"`{where or 'the body'}` holds a lone UTF-16 surrogate, {describe(found.group())}, at character "
            f"{found.start() + 1}: a character was cut in two (pasting half of an emoji does it); "
            f"paste the whole character or remove it"
        )
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            return _lone_surrogate(key, f"a key of {where or 'the body'}")
        why = _lone_surrogate(item, f"{where}.{key}" if where else str(key))
        if why:
            return why
    return None


def _error(message: str, status: int):
    response = make_response(jsonify({"error": message}), status)
    return response


def _judgement(row: Row, answer: str, slot: str, reviewer: str, fields: Any, correction: str | None) -> Judgement:
    if not isinstance(fields, dict):
        raise BadRequest(f"answer {slot!r}: expected an object {{score, flagged, note, sha}}")
    score = fields.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5):
        raise BadRequest(f"answer {slot!r}: the score must be a whole number from 1 to 5 (or null), got {score!r}")
    flagged = fields.get("flagged", False)
    if not isinstance(flagged, bool):
        raise BadRequest(f"answer {slot!r}: `flagged` must be true or false")
    note = fields.get("note")
    if note is not None and not isinstance(note, str):
        raise BadRequest(f"answer {slot!r}: the note must be text")
    if note is not None and len(note) > NOTE_MAX:
        raise BadRequest(f"answer {slot!r}: the note is over {NOTE_MAX // 1024} KiB", 413)
    if fields.get("sha") != row.sha(answer):
        raise BadRequest(f"row {row.id}: answer {slot!r} is not the text this page showed; reload the page", 409)
    return Judgement(
        row_id=row.id,
        answer=answer,
        reviewer=reviewer,
        score=score,
        flagged=flagged,
        correction=correction,
        note=note if note and note.strip() else None,
        data_fingerprint=row.fingerprint,
        answer_sha=row.sha(answer) or "",
    )


def _changed(new: Judgement, old: Judgement | None) -> bool:
    """Whether ``new`` says something the reviewer's current judgement does not (an empty
    judgement of an answer never judged is not stored)."""
    fields = ("score", "flagged", "correction", "note", "answer_sha", "data_fingerprint")
    if old is None:
        return new.score is not None or new.flagged or new.correction is not None or new.note is not None
    return any(getattr(new, f) != getattr(old, f) for f in fields)


def serve(app: Flask, host: str, port: int, ready=None, threads: int = 8) -> None:
    """Serve ``app`` with waitress until Ctrl-C (KeyboardInterrupt) or SIGTERM; ``ready(server)``
    is called once the socket listens (its ``effective_port`` is the port, also for port 0)."""
    import signal

    from waitress.server import create_server

    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        max_request_body_size=MAX_BODY + 1024,
        ident="sftc-review",
        clear_untrusted_proxy_headers=True,
    )

    def stop(signum, frame):  # SIGTERM stops as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if ready is not None:
            ready(server)
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()

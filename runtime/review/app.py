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
Bodies over 64 KiB are refused (413). Nothing is written but `RUN/reviews.sqlite`.
"""

from __future__ import annotations

import hmac
from collections import Counter
from typing import Any
from urllib.parse import unquote

from flask import Flask, jsonify, make_response, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from .rows import Row, RunRows, blind_order
from .store import CORRECTION_MAX, NOTE_MAX, Judgement, ReviewStore, valid_reviewer
from .summary import review_summary, valid_current

__all__ = ["MAX_BODY", "REVIEWER_COOKIE", "TOKEN_COOKIE", "TOKEN_HEADER", "create_app", "serve"]

MAX_BODY = 64 * 1024
TOKEN_COOKIE, TOKEN_HEADER, REVIEWER_COOKIE = "sftc_review_token", "X-Review-Token", "sftc_reviewer"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[:host.index("]") + 1] if "]" in host else host
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


def create_app(rows: RunRows, reviewer: str | None = None, blind: bool = False, token: str | None = None,
               bound_host: str = "127.0.0.1") -> Flask:
    """The app for ``rows``. ``reviewer``: every judgement is theirs (else each page asks);
    ``blind``: answers shown as A/B; ``token``: required on every request."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, JSON_SORT_KEYS=False, TEMPLATES_AUTO_RELOAD=False)
    store = ReviewStore(rows.run_dir)
    allowed_hosts = LOOPBACK | {bound_host}

    def reviewer_of_request() -> str | None:
        if reviewer is not None:
            return reviewer
        name = unquote(request.cookies.get(REVIEWER_COOKIE, ""))
        return name if name and valid_reviewer(name) is None else None

    @app.before_request
    def guard():
        if token is not None:
            given = request.args.get("token") or request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                return _error("a valid token is required: open the URL sftc review printed (it carries ?token=...)",
                              403)
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

    def progress(name: str | None) -> dict[str, Any]:
        judgements = store.history()
        current = valid_current(judgements, rows.samples, rows.base_samples, rows.fingerprints)
        total, mine = Counter(r.source for r in rows.rows), Counter()
        for row in rows.rows:
            answers = current.get(row.id, {})
            if name and all(answers.get(a, {}).get(name) is not None and answers[a][name].score is not None
                            for _, a in slots(row, name, blind)):
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
                answers.append({"slot": slot, "label": f"Answer {slot}" if blind else
                                ("Tuned answer" if answer == "tuned" else _base_label(rows.base_kind)),
                                "text": row.text(answer), "sha": row.sha(answer),
                                "score": None if j is None or stale else j.score,
                                "flagged": bool(j and not stale and j.flagged),
                                "note": (j.note or "") if j and not stale else "",
                                "stale": stale})
            tuned = current.get((row.id, "tuned"))
            shown.append({"row": row, "answers": answers,
                          "correction": (tuned.correction or "") if tuned is not None else ""})
        return render_template("review.html", rows=shown, reviewer=name, fixed_reviewer=reviewer is not None,
                               blind=blind, run=str(rows.run_dir), progress=progress(name),
                               has_base=rows.base_samples is not None, base_kind=rows.base_kind)

    @app.get("/api/progress")
    def api_progress():
        return jsonify(progress(reviewer_of_request()))

    @app.post("/api/judgements")
    def api_judgements():
        if not request.is_json:
            raise BadRequest("send the judgement as JSON (Content-Type: application/json)", 415)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("the body is not a JSON object")
        name = body.get("reviewer")
        why = valid_reviewer(name)
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
        return jsonify({"ok": True, "saved": len(saved), "row": row.id,
                        "created_at": saved[0].created_at if saved else None, "progress": progress(name)})

    return app


def _base_label(kind: str | None) -> str:
    return "Base answer (few-shot)" if kind == "few_shot" else "Base answer"


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
    return Judgement(row_id=row.id, answer=answer, reviewer=reviewer, score=score, flagged=flagged,
                     correction=correction, note=note if note and note.strip() else None,
                     data_fingerprint=row.fingerprint, answer_sha=row.sha(answer) or "")


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

    server = create_server(app, host=host, port=port, threads=threads, max_request_body_size=MAX_BODY + 1024,
                           ident="sftc-review", clear_untrusted_proxy_headers=True)

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

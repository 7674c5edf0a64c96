"""The judgements of `sftc review`: an append-only SQLite table in `RUN/reviews.sqlite`.

One judgement is what one reviewer said about one answer (the tuned model's or the base
model's) of one eval row at one moment: a score 1-5 (or none), a flag, a corrected answer
(the answer the model should have given; tuned answers only) and a note. A reviewer who
changes their mind adds a new judgement; the latest one per (row, answer, reviewer) is the
current one and the older ones stay as history. Nothing is ever updated or deleted (two
triggers refuse it).

Durability: WAL journal, ``synchronous=FULL`` and one connection per call, so `add`
returns only after the row is committed to disk: what the server has acknowledged
survives a killed process or a power cut. Concurrent writers wait on the busy timeout
instead of failing.

Each judgement records what it was about: ``answer_sha`` (SHA-256 of the answer text
that was shown) and ``data_fingerprint`` (the row's source fingerprint from
`manifest.json`). A judgement whose text or data no longer match is stale and is not
counted (see `runtime.review.summary`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ANSWERS", "DB_NAME", "Judgement", "ReviewStore", "answer_sha", "row_ids", "valid_reviewer"]

DB_NAME = "reviews.sqlite"
ANSWERS = ("tuned", "base")
BUSY_TIMEOUT_S = 30.0
REVIEWER_MAX = 64
CORRECTION_MAX = 16 * 1024
NOTE_MAX = 4 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    row_id           TEXT    NOT NULL,
    answer           TEXT    NOT NULL CHECK (answer IN ('tuned', 'base')),
    reviewer         TEXT    NOT NULL CHECK (length(reviewer) BETWEEN 1 AND 64),
    score            INTEGER CHECK (score IS NULL OR score BETWEEN 1 AND 5),
    flagged          INTEGER NOT NULL DEFAULT 0 CHECK (flagged IN (0, 1)),
    correction       TEXT,
    note             TEXT,
    created_at       TEXT    NOT NULL,
    data_fingerprint TEXT    NOT NULL,
    answer_sha       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS judgements_current ON judgements (row_id, answer, reviewer, id);
CREATE TRIGGER IF NOT EXISTS judgements_no_update BEFORE UPDATE ON judgements
    BEGIN SELECT RAISE(ABORT, 'judgements are append-only'); END;
CREATE TRIGGER IF NOT EXISTS judgements_no_delete BEFORE DELETE ON judgements
    BEGIN SELECT RAISE(ABORT, 'judgements are append-only'); END;
"""
_COLUMNS = (
    "id",
    "row_id",
    "answer",
    "reviewer",
    "score",
    "flagged",
    "correction",
    "note",
    "created_at",
    "data_fingerprint",
    "answer_sha",
)


def answer_sha(text: str) -> str:
    """SHA-256 (hex) of an answer's text as shown to the reviewer (a lone surrogate, which a model's
    bytes decoded half a character can hold, hashed as its code point rather than refused)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def row_ids(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    """The review id of each sample, `runtime.plan.sample_origin.sample_id` (``faq:eval.jsonl:12``;
    ``math:chats.jsonl:7#3`` for one turn of a conversation trained per turn); a second sample
    with the same id (two files with one basename) gets ``~2``, a third ``~3``, in sample order."""
    from runtime.plan.sample_origin import sample_id, sample_key

    seen: Counter[str] = Counter()
    out = []
    for s in samples:
        base = sample_id(*sample_key(s))
        seen[base] += 1
        out.append(base if seen[base] == 1 else f"{base}~{seen[base]}")
    return out


def valid_reviewer(name: Any) -> str | None:
    """Why ``name`` is not a reviewer name (None: it is one): 1-64 printable characters."""
    if not isinstance(name, str) or not name.strip():
        return "a reviewer name is required"
    if len(name) > REVIEWER_MAX:
        return f"a reviewer name has at most {REVIEWER_MAX} characters"
    if not name.isprintable() or name != name.strip():
        return "a reviewer name is printable text without leading or trailing spaces"
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Judgement:
    """One row of the table. ``id`` and ``created_at`` are set by `ReviewStore.add`."""

    row_id: str
    answer: str  # 'tuned' | 'base'
    reviewer: str
    score: int | None
    flagged: bool
    correction: str | None
    note: str | None
    data_fingerprint: str
    answer_sha: str
    id: int | None = None
    created_at: str | None = None

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {self.answer!r}")
        why = valid_reviewer(self.reviewer)
        if why:
            raise ValueError(why)
        if self.score is not None and (isinstance(self.score, bool) or self.score not in (1, 2, 3, 4, 5)):
            raise ValueError(f"score must be 1-5 or none, got {self.score!r}")
        if self.correction is not None and self.answer != "tuned":
            raise ValueError("a correction is the answer the tuned model should have given: tuned answers only")
        if self.correction is not None and len(self.correction) > CORRECTION_MAX:
            raise ValueError(f"a correction has at most {CORRECTION_MAX} characters")
        if self.note is not None and len(self.note) > NOTE_MAX:
            raise ValueError(f"a note has at most {NOTE_MAX} characters")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _COLUMNS}


def _judgement(row: sqlite3.Row | tuple) -> Judgement:
    d = dict(zip(_COLUMNS, row))
    d["flagged"] = bool(d["flagged"])
    return Judgement(**d)


class ReviewStore:
    """`RUN/reviews.sqlite`. Every call opens its own connection (safe from any thread)."""

    def __init__(self, run_dir: str | Path, create: bool = True):
        self.path = Path(run_dir) / DB_NAME
        if create:
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode = WAL")  # persistent: set once, kept in the file
                db.executescript(_SCHEMA)
                db.execute("PRAGMA user_version = 1")
                db.commit()

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA synchronous = FULL")
        return db

    def add(self, judgement: Judgement) -> Judgement:
        """Append ``judgement``; returns it with id and created_at once it is committed to disk."""
        return self.add_many([judgement])[0]

    def add_many(self, judgements: Sequence[Judgement]) -> list[Judgement]:
        """Append ``judgements`` in one transaction (all or none); returns them with ids and
        created_at once they are committed to disk."""
        created = _now()
        out = []
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for j in judgements:
                    cursor = db.execute(
                        "INSERT INTO judgements (row_id, answer, reviewer, score, flagged, correction, note,"
                        " created_at, data_fingerprint, answer_sha) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            j.row_id,
                            j.answer,
                            j.reviewer,
                            j.score,
                            int(bool(j.flagged)),
                            j.correction,
                            j.note,
                            created,
                            j.data_fingerprint,
                            j.answer_sha,
                        ),
                    )
                    out.append(Judgement(**{**j.to_dict(), "id": cursor.lastrowid, "created_at": created}))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def history(self, row: str | None = None) -> list[Judgement]:
        """Every judgement (of ``row``), oldest first."""
        if not self.exists:
            return []
        with closing(self._connect()) as db:
            if row is None:
                rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM judgements ORDER BY id").fetchall()
            else:
                rows = db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM judgements WHERE row_id = ? ORDER BY id", (row,)
                ).fetchall()
        return [_judgement(r) for r in rows]

    def current(self, reviewer: str | None = None) -> list[Judgement]:
        """The latest judgement per (row, answer, reviewer) (of ``reviewer`` only), by row then id."""
        return current_of(self.history() if reviewer is None else [j for j in self.history() if j.reviewer == reviewer])


def current_of(judgements: Iterable[Judgement]) -> list[Judgement]:
    """The latest (highest id) of ``judgements`` per (row, answer, reviewer)."""
    latest: dict[tuple[str, str, str], Judgement] = {}
    for j in judgements:
        key = (j.row_id, j.answer, j.reviewer)
        if key not in latest or (j.id or 0) > (latest[key].id or 0):
            latest[key] = j
    return sorted(latest.values(), key=lambda j: (j.row_id, j.id or 0))

"""One SQLite database per inbox, with an FTS5 index over subject, sender and body.

The database is in memory by default (an inbox is a few hundred emails; building it takes a few
milliseconds) and cached per (inbox id, seed). Connections are opened with
`check_same_thread=False` so an asyncio program may build one in one thread and use it in the
event loop's; all calls are short and synchronous, so no two run at once within one loop.

Queries reach this module already sanitised (see `tools.fts_query`): this room stores and ranks,
it does not parse what a model typed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from hone.envs.inbox.data import Email, Inbox, load_inbox

_SCHEMA = """
CREATE TABLE emails (
    id INTEGER PRIMARY KEY,
    message_id TEXT UNIQUE NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    date TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE VIRTUAL TABLE emails_fts USING fts5(subject, sender, body, tokenize = 'porter unicode61');
"""
# bm25 weights per FTS column (subject, sender, body): a hit in the subject says more than one in a long body
_BM25_WEIGHTS = (2.0, 1.0, 1.0)
_SNIPPET_TOKENS = 24


@dataclass(frozen=True)
class SearchHit:
    message_id: str
    subject: str
    sender: str
    date: str
    snippet: str


class InboxDB:
    """An inbox's emails in SQLite: `search` (FTS5 MATCH ranked by bm25) and `get` by message id."""

    def __init__(self, emails: tuple[Email, ...] | list[Email], path: str = ":memory:"):
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.executescript("DROP TABLE IF EXISTS emails; DROP TABLE IF EXISTS emails_fts;" + _SCHEMA)
        with self.conn:
            for rowid, e in enumerate(emails, start=1):
                self.conn.execute(
                    "INSERT INTO emails VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rowid, e.message_id, e.sender, ", ".join(e.recipients), e.subject, e.date, e.body),
                )
                self.conn.execute(
                    "INSERT INTO emails_fts (rowid, subject, sender, body) VALUES (?, ?, ?, ?)",
                    (rowid, e.subject, e.sender, e.body),
                )

    def search(self, match: str, limit: int) -> list[SearchHit]:
        """Rows matching an FTS5 `match` expression, best first. Raises sqlite3.Error on bad syntax."""
        rows = self.conn.execute(
            f"""
            SELECT e.message_id, e.subject, e.sender, e.date,
                   snippet(emails_fts, 2, '', '', '...', {_SNIPPET_TOKENS})
            FROM emails_fts JOIN emails e ON e.id = emails_fts.rowid
            WHERE emails_fts MATCH ?
            ORDER BY bm25(emails_fts, ?, ?, ?), e.id
            LIMIT ?
            """,
            (match, *_BM25_WEIGHTS, limit),
        ).fetchall()
        return [SearchHit(*row) for row in rows]

    def get(self, message_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT message_id, sender, recipients, subject, date, body FROM emails WHERE message_id = ?", (message_id,)
        ).fetchone()
        if row is None:
            return None
        keys = ("message_id", "sender", "recipients", "subject", "date", "body")
        return dict(zip(keys, row))

    def message_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT message_id FROM emails ORDER BY id")]

    def close(self) -> None:
        self.conn.close()


_CACHE: dict[tuple[int, int, bool], InboxDB] = {}


def inbox_db(inbox: Inbox) -> InboxDB:
    """The (cached) in-memory database of `inbox`."""
    key = (inbox.inbox_id, inbox.seed, inbox.held_out)
    db = _CACHE.get(key)
    if db is None:
        db = _CACHE[key] = InboxDB(inbox.emails)
    return db


def db_for(inbox_id: int, seed: int = 0, held_out: bool = False) -> InboxDB:
    """The database of inbox `inbox_id` generated with `seed` (what a question points at)."""
    return inbox_db(load_inbox(inbox_id, seed, held_out))

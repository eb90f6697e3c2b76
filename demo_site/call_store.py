"""The sink's SQLite store: one row per received Segment message, duplicates included.

Results are computed on distinct ``messageId`` values, as Segment
de-duplicates on them (:meth:`CallStore.result_messages`); the live feed shows
every row and marks repeats.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from demo_site.json_responses import JSONValue
from optibase_edge._results import CONVERSION_TRIGGERED, EXPERIMENT_VIEWED


@dataclass(frozen=True, slots=True)
class Row:
    """A validated message, ready to store; the JSON fields are already serialised."""

    received_at: str
    type: str
    event: str | None
    message_id: str
    anonymous_id: str | None
    user_id: str | None
    timestamp: str | None
    sent_at: str | None
    properties: str | None
    traits: str | None
    context: str | None
    raw: str


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT,
    message_id TEXT NOT NULL,
    anonymous_id TEXT,
    user_id TEXT,
    timestamp TEXT,
    sent_at TEXT,
    properties TEXT,
    traits TEXT,
    context TEXT,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_message_id ON calls (message_id, id);
"""

# What experiment_results() reads, in arrival order, each messageId's first row only: Identify
# calls linking a userId to an anonymousId, and the two tracks results are made of.
_SELECT_RESULT_MESSAGES: Final = """
SELECT type, event, anonymous_id, user_id, properties FROM calls
WHERE id IN (SELECT MIN(id) FROM calls GROUP BY message_id)
AND (
    (type = 'identify' AND anonymous_id IS NOT NULL AND user_id IS NOT NULL)
    OR (type = 'track' AND event IN (?, ?))
)
ORDER BY id
"""

_CALL_COLUMNS: Final = (
    "id",
    "received_at",
    "type",
    "event",
    "message_id",
    "anonymous_id",
    "user_id",
    "timestamp",
    "sent_at",
    "properties",
    "traits",
    "context",
    "raw",
)
_JSON_COLUMNS: Final = frozenset({"properties", "traits", "context", "raw"})
_SELECT_CALLS: Final = (
    "SELECT "
    + ", ".join(f"c.{name}" for name in _CALL_COLUMNS)
    + ", EXISTS (SELECT 1 FROM calls d WHERE d.message_id = c.message_id AND d.id < c.id)"
    + " FROM calls c"
)


class CallStore:
    """One SQLite connection, shared by threads under a lock.

    Calls come back as dicts keyed by column name, JSON columns decoded, plus
    ``duplicate``: whether an earlier row has the same ``messageId``.
    """

    def __init__(self, path: str) -> None:
        """Open (and if needed create) the database at *path*; ``":memory:"`` works."""
        self._path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the connection; any later call reopens it."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def insert(self, rows: Sequence[Row]) -> None:
        """Store *rows* in one transaction: all of them or none."""
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            with conn:
                conn.executemany(
                    "INSERT INTO calls ("
                    + ", ".join(_CALL_COLUMNS[1:])
                    + ") VALUES ("
                    + ", ".join("?" * (len(_CALL_COLUMNS) - 1))
                    + ")",
                    [
                        (
                            r.received_at,
                            r.type,
                            r.event,
                            r.message_id,
                            r.anonymous_id,
                            r.user_id,
                            r.timestamp,
                            r.sent_at,
                            r.properties,
                            r.traits,
                            r.context,
                            r.raw,
                        )
                        for r in rows
                    ],
                )

    def calls_after(self, after: int, limit: int) -> list[dict[str, JSONValue]]:
        """Up to *limit* calls with an id above *after*, oldest first."""
        with self._lock:
            cursor = self._connection().execute(
                _SELECT_CALLS + " WHERE c.id > ? ORDER BY c.id LIMIT ?", (after, limit)
            )
            return [_call_dict(row) for row in cursor.fetchall()]

    def latest(self, limit: int) -> list[dict[str, JSONValue]]:
        """The newest *limit* calls, newest first."""
        with self._lock:
            cursor = self._connection().execute(
                _SELECT_CALLS + " ORDER BY c.id DESC LIMIT ?", (limit,)
            )
            return [_call_dict(row) for row in cursor.fetchall()]

    def count(self, up_to: int) -> int:
        """Calls stored with an id up to *up_to*, duplicates included."""
        with self._lock:
            cursor = self._connection().execute(
                "SELECT COUNT(*) FROM calls WHERE id <= ?", (up_to,)
            )
            return int(cursor.fetchone()[0])

    def result_messages(self) -> list[dict[str, JSONValue]]:
        """The Segment messages results are computed from, as :func:`experiment_results` reads them.

        The first row of each ``messageId`` (later ones are Segment's duplicates),
        in arrival order, and only what counts: Identify calls carrying both ids,
        "Experiment Viewed" and "Conversion Triggered" tracks. Each message holds
        ``type``, ``anonymousId`` and ``userId``; a track also ``event`` and
        ``properties``.
        """
        with self._lock:
            rows = (
                self._connection()
                .execute(_SELECT_RESULT_MESSAGES, (EXPERIMENT_VIEWED, CONVERSION_TRIGGERED))
                .fetchall()
            )
        return [_result_message(*row) for row in rows]

    def clear(self) -> int:
        """Delete every call; the number deleted."""
        with self._lock:
            conn = self._connection()
            with conn:
                # ids keep growing (AUTOINCREMENT), so a live feed's `after` stays valid.
                return conn.execute("DELETE FROM calls").rowcount


def _call_dict(row: Sequence[Any]) -> dict[str, JSONValue]:
    call: dict[str, JSONValue] = {}
    for name, value in zip(_CALL_COLUMNS, row, strict=False):
        call[name] = json.loads(value) if name in _JSON_COLUMNS and value is not None else value
    call["duplicate"] = bool(row[len(_CALL_COLUMNS)])
    return call


def _result_message(
    kind: str, event: str | None, visitor: str | None, user: str | None, properties: str | None
) -> dict[str, JSONValue]:
    message: dict[str, JSONValue] = {"type": kind, "anonymousId": visitor, "userId": user}
    if kind == "track":
        message["event"] = event
        message["properties"] = json.loads(properties) if properties is not None else None
    return message

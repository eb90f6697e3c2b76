"""A local, Segment-compatible sink with a results dashboard.

The demo points the library's Segment delivery at this app instead of
``https://api.segment.io``, so the whole loop (assignment, Experiment Viewed,
Conversion Triggered, results) works without a Segment account::

    app = create_sink_app("sink.sqlite3", write_key="demo")

Ingestion mirrors Segment's HTTP Tracking API (``POST /v1/batch``,
``/v1/track``, ``/v1/identify``, ``/v1/page`` and friends): JSON bodies,
optionally ``Content-Encoding: gzip``; 500 KB per request (after
decompression), 32 KB per message, 2,500 messages per batch; every message
needs ``userId`` or ``anonymousId`` and a track needs ``event``.  Unlike
Segment, which answers 200 to nearly everything, this sink is strict: any
invalid message rejects the whole request with 400, and a wrong or missing
write key (when one is configured) is a 401, so bugs in the sender surface.

Every received message is stored as a row in SQLite, duplicates included;
results are computed on distinct ``messageId`` values, as Segment de-duplicates
on them.

Read side: ``GET /`` (dashboard), ``GET /api/calls?after=<id>&limit=<n>``,
``GET /api/results``; ``DELETE /api/calls`` or ``POST /api/reset`` clears.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import html
import json
import math
import re
import secrets
import sqlite3
import threading
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

__all__ = ["create_sink_app"]

MAX_REQUEST_BYTES: Final = 500 * 1024
"""Largest accepted request body, measured after decompression."""
MAX_WIRE_BYTES: Final = MAX_REQUEST_BYTES + 64 * 1024
"""Largest body read off the wire (gzip of incompressible data can grow a little)."""
MAX_MESSAGE_BYTES: Final = 32 * 1024
MAX_BATCH_MESSAGES: Final = 2500
MAX_MESSAGE_ID_CHARS: Final = 100
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
FEED_ROWS: Final = 50

EXPERIMENT_VIEWED: Final = "Experiment Viewed"
CONVERSION_TRIGGERED: Final = "Conversion Triggered"

_CALL_TYPES: Final = frozenset({"identify", "track", "page", "screen", "group", "alias"})
_JSON_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

JSONValue = Any
"""A value decoded by :mod:`json` (dict, list, str, int, float, bool or None)."""


# --------------------------------------------------------------------------- errors


class _RequestError(Exception):
    """Ends a request with *status* and a JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> _RequestError:
    return _RequestError(400, message)


def _json_response(data: JSONValue, status: int = 200, **headers: str) -> Response:
    # ensure_ascii keeps the body valid UTF-8 even if the data holds lone
    # surrogates (legal as JSON escapes, not encodable as UTF-8).
    body = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={**_JSON_HEADERS, **headers},
    )


def _error_response(error: _RequestError) -> Response:
    extra = {"WWW-Authenticate": 'Basic realm="segment-sink"'} if error.status == 401 else {}
    return _json_response({"success": False, "error": error.message}, error.status, **extra)


# --------------------------------------------------------------------------- decoding


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WIRE_BYTES:
        raise _bad("request body too large (limit 500 KB)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WIRE_BYTES:
            raise _bad("request body too large (limit 500 KB)")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one or more gzip members, refusing more than *limit* bytes of output."""
    out = bytearray()
    while True:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += decompressor.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise _bad(f"malformed gzip body: {exc}") from None
        if len(out) > limit:
            raise _bad("request body too large after decompression (limit 500 KB)")
        if not decompressor.eof:
            raise _bad("malformed gzip body: truncated stream")
        data = decompressor.unused_data
        if not data.strip(b"\x00"):  # trailing zero padding is tolerated, like gzip(1)
            return bytes(out)


def _decode_body(raw: bytes, content_encoding: str) -> bytes:
    encodings = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
    if encodings in ([], ["identity"]):
        body = raw
    elif encodings in (["gzip"], ["x-gzip"]):
        body = _gunzip(raw, MAX_REQUEST_BYTES)
    else:
        raise _bad(f"unsupported Content-Encoding: {content_encoding!r}")
    if len(body) > MAX_REQUEST_BYTES:
        raise _bad("request body too large (limit 500 KB)")
    return body


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _parse_json(body: bytes) -> dict[str, JSONValue]:
    try:
        payload = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _bad("invalid JSON: the body must be an object")
    return payload


# --------------------------------------------------------------------------- auth


def _basic_username(header: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header, else None."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, _, _password = decoded.partition(":")
    return username


def _same_key(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")
    )


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class _Row:
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


def _dumps(value: JSONValue) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _dumps_or_none(value: JSONValue) -> str | None:
    return None if value is None else _dumps(value)


def _merge_defaults(
    defaults: Mapping[str, JSONValue], own: Mapping[str, JSONValue]
) -> dict[str, JSONValue]:
    """*own* over *defaults*, recursively for nested objects."""
    merged = dict(defaults)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = _merge_defaults(base, value)
        else:
            merged[key] = value
    return merged


def _identity(value: JSONValue) -> str | None:
    """A user or anonymous ID as text; None when absent or empty."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _dumps(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _scalar_text(value: JSONValue) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else _dumps(value)


def _object_or_none(
    message: Mapping[str, JSONValue], key: str, where: str
) -> dict[str, JSONValue] | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(f"{where}: {key} must be an object")
    return value


def _to_row(
    message: Mapping[str, JSONValue],
    *,
    call_type: str,
    where: str,
    received_at: str,
    defaults: Mapping[str, JSONValue],
) -> _Row:
    """Validate one message and turn it into a storable row."""
    effective: dict[str, JSONValue] = {k: v for k, v in message.items() if k != "writeKey"}
    effective["type"] = call_type
    for key in ("context", "integrations"):
        own = _object_or_none(message, key, where)
        default = defaults.get(key)
        if isinstance(default, dict):
            effective[key] = _merge_defaults(default, own or {})
    if "sentAt" not in effective and defaults.get("sentAt") is not None:
        effective["sentAt"] = defaults["sentAt"]

    anonymous_id = _identity(effective.get("anonymousId"))
    user_id = _identity(effective.get("userId"))
    if anonymous_id is None and user_id is None:
        raise _bad(f"{where}: userId or anonymousId is required")
    if call_type == "alias" and _identity(effective.get("previousId")) is None:
        raise _bad(f"{where}: alias requires previousId")

    event: str | None = None
    if call_type == "track":
        raw_event = effective.get("event")
        if not isinstance(raw_event, str) or not raw_event.strip():
            raise _bad(f"{where}: track requires a non-empty event")
        event = raw_event
    elif call_type in ("page", "screen"):
        name = effective.get("name")
        event = name if isinstance(name, str) and name else None

    properties = _object_or_none(effective, "properties", where)
    traits = _object_or_none(effective, "traits", where)
    context = _object_or_none(effective, "context", where)
    _object_or_none(effective, "integrations", where)

    message_id = effective.get("messageId")
    if message_id is None:
        message_id = f"sink-{uuid.uuid4()}"  # Segment assigns one when it is missing
    elif not isinstance(message_id, str) or not message_id:
        raise _bad(f"{where}: messageId must be a non-empty string")
    elif len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise _bad(f"{where}: messageId is longer than {MAX_MESSAGE_ID_CHARS} characters")

    raw = _dumps(effective)
    size = len(
        json.dumps(effective, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    )
    if size > MAX_MESSAGE_BYTES:
        raise _bad(f"{where}: message larger than 32 KB")

    return _Row(
        received_at=received_at,
        type=call_type,
        event=event,
        message_id=message_id,
        anonymous_id=anonymous_id,
        user_id=user_id,
        timestamp=_scalar_text(effective.get("timestamp")),
        sent_at=_scalar_text(effective.get("sentAt")),
        properties=_dumps_or_none(properties),
        traits=_dumps_or_none(traits),
        context=_dumps_or_none(context),
        raw=raw,
    )


def _rows_from_payload(payload: Mapping[str, JSONValue], call_type: str) -> list[_Row]:
    received_at = _now()
    if call_type != "batch":
        return [
            _to_row(
                payload, call_type=call_type, where=call_type, received_at=received_at, defaults={}
            )
        ]
    batch = payload.get("batch")
    if not isinstance(batch, list):
        raise _bad("batch: a 'batch' array is required")
    if len(batch) > MAX_BATCH_MESSAGES:
        raise _bad(f"batch: more than {MAX_BATCH_MESSAGES} messages")
    defaults: dict[str, JSONValue] = {}
    for key in ("context", "integrations"):
        value = _object_or_none(payload, key, "batch")
        if value is not None:
            defaults[key] = value
    if payload.get("sentAt") is not None:
        defaults["sentAt"] = payload["sentAt"]
    rows: list[_Row] = []
    for index, item in enumerate(batch):
        where = f"batch[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{where}: each message must be an object")
        item_type = item.get("type")
        if item_type not in _CALL_TYPES:
            raise _bad(f"{where}: type must be one of {', '.join(sorted(_CALL_TYPES))}")
        rows.append(
            _to_row(
                item,
                call_type=str(item_type),
                where=where,
                received_at=received_at,
                defaults=defaults,
            )
        )
    return rows


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- storage

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


class _Store:
    """One SQLite connection, shared by threads under a lock."""

    def __init__(self, path: str) -> None:
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
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def insert(self, rows: Sequence[_Row]) -> None:
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

    def counts(self) -> tuple[int, int]:
        """(rows, distinct messageIds)."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT COUNT(*), COUNT(DISTINCT message_id) FROM calls")
                .fetchone()
            )
            return int(row[0]), int(row[1])

    def ab_tracks(self) -> list[tuple[int, str | None, str, str | None, str | None]]:
        """Distinct-messageId A/B tracks: (id, anonymous_id, event, timestamp, properties)."""
        with self._lock:
            cursor = self._connection().execute(
                "SELECT id, anonymous_id, event, timestamp, properties FROM calls"
                " WHERE id IN (SELECT MIN(id) FROM calls GROUP BY message_id)"
                " AND type = 'track' AND event IN (?, ?) ORDER BY id",
                (EXPERIMENT_VIEWED, CONVERSION_TRIGGERED),
            )
            return list(cursor.fetchall())

    def clear(self) -> int:
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


# --------------------------------------------------------------------------- results


def _id_text(value: JSONValue) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _test_variant(item: Mapping[str, JSONValue]) -> tuple[str, str] | None:
    test = _id_text(item.get("test_id")) or _id_text(item.get("experiment_id"))
    variant = _id_text(item.get("variant_id")) or _id_text(item.get("variation_id"))
    return (test, variant) if test and variant else None


def _listed_variants(value: JSONValue) -> set[tuple[str, str]]:
    """The (test, variant) pairs of a conversion's ``variants`` property."""
    pairs: set[tuple[str, str]] = set()
    if isinstance(value, list):
        for item in value:
            pair = _test_variant(item) if isinstance(item, dict) else None
            if pair:
                pairs.add(pair)
    elif isinstance(value, dict):  # tolerate the {test_id: variant_id} shorthand
        for test, variant in value.items():
            variant_text = _id_text(variant)
            if test and variant_text:
                pairs.add((test, variant_text))
    return pairs


def _event_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Exposure:
    row_id: int
    at: datetime | None
    pair: tuple[str, str]

    def before(self, row_id: int, at: datetime | None) -> bool:
        if self.at is not None and at is not None:
            return self.at <= at
        return self.row_id < row_id


def compute_results(
    tracks: Iterable[tuple[int, str | None, str, str | None, str | None]],
) -> dict[str, JSONValue]:
    """Results per test and variant from distinct-messageId A/B tracks.

    *exposed* counts distinct visitors (``anonymousId``) with an Experiment
    Viewed for the variant.  A conversion counts for a variant when its visitor
    was exposed to it, either per the conversion's ``variants`` list or by an
    Experiment Viewed no later than the conversion (event ``timestamp`` when
    both parse, else arrival order).  ``rate`` is conversions / exposed, None
    when nobody was exposed.
    """
    exposures: dict[str, list[_Exposure]] = {}
    exposed: dict[tuple[str, str], set[str]] = {}
    conversions: list[tuple[int, str, datetime | None, str, set[tuple[str, str]]]] = []
    for row_id, visitor, event, timestamp, properties_json in tracks:
        if not visitor or not properties_json:
            continue
        properties = json.loads(properties_json)
        if not isinstance(properties, dict):
            continue
        at = _event_time(timestamp)
        if event == EXPERIMENT_VIEWED:
            pair = _test_variant(properties)
            if pair:
                exposures.setdefault(visitor, []).append(_Exposure(row_id, at, pair))
                exposed.setdefault(pair, set()).add(visitor)
        else:
            conversion_id = _id_text(properties.get("conversion_id"))
            if conversion_id:
                listed = _listed_variants(properties.get("variants"))
                conversions.append((row_id, visitor, at, conversion_id, listed))

    converted: dict[tuple[str, str], dict[str, set[str]]] = {}
    conversion_ids: set[str] = set()
    pairs: set[tuple[str, str]] = set(exposed)
    for row_id, visitor, at, conversion_id, listed in conversions:
        conversion_ids.add(conversion_id)
        pairs |= listed
        seen = {e.pair for e in exposures.get(visitor, ()) if e.before(row_id, at)}
        for pair in listed | seen:
            converted.setdefault(pair, {}).setdefault(conversion_id, set()).add(visitor)

    ordered_ids = sorted(conversion_ids)
    tests: dict[str, list[dict[str, JSONValue]]] = {}
    for test_id, variant_id in sorted(pairs):
        n_exposed = len(exposed.get((test_id, variant_id), ()))
        by_conversion = converted.get((test_id, variant_id), {})
        tests.setdefault(test_id, []).append(
            {
                "variant_id": variant_id,
                "exposed": n_exposed,
                "conversions": {
                    cid: {
                        "visitors": len(by_conversion.get(cid, ())),
                        "rate": len(by_conversion.get(cid, ())) / n_exposed if n_exposed else None,
                    }
                    for cid in ordered_ids
                },
            }
        )
    return {
        "tests": [{"test_id": t, "variants": v} for t, v in tests.items()],
        "conversion_ids": ordered_ids,
    }


# --------------------------------------------------------------------------- dashboard

_UNSAFE_CHARS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_PALETTE: Final = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")


def _e(value: object, limit: int | None = None) -> str:
    """Escape any value for HTML text or a quoted attribute (also inside inline SVG)."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(_UNSAFE_CHARS.sub("\ufffd", text), quote=True)


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _short_json(value: JSONValue, limit: int = 120) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg_chart(test: Mapping[str, Any], conversion_ids: Sequence[str]) -> str:
    """A horizontal bar chart of conversion rate per variant, grouped by conversion id."""
    variants: list[Mapping[str, Any]] = list(test["variants"])
    if not variants or not conversion_ids:
        return ""
    rates = [v["conversions"][cid]["rate"] or 0.0 for v in variants for cid in conversion_ids]
    scale = max(rates) or 1.0
    width, label_w, bar_x, bar_w = 660, 150, 160, 360
    row_h, bar_h, head_h, gap = 20, 14, 22, 8
    height = len(conversion_ids) * (head_h + len(variants) * row_h + gap) + 24
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img"'
        f' aria-label="{_e("Conversion rate by variant for test " + str(test["test_id"]))}">'
    ]
    y = 0
    for cid in conversion_ids:
        parts.append(f'<text class="group" x="0" y="{y + 15}">{_e(cid, 60)}</text>')
        y += head_h
        for index, variant in enumerate(variants):
            stats = variant["conversions"][cid]
            rate = stats["rate"]
            length = round(bar_w * (rate or 0.0) / scale, 1)
            color = _PALETTE[index % len(_PALETTE)]
            tip = (
                f"{variant['variant_id']} · {cid}: {stats['visitors']} / "
                f"{variant['exposed']} = {_percent(rate)}"
            )
            parts.append(
                f"<g><title>{_e(tip)}</title>"
                f'<text class="label" x="{label_w}" y="{y + 12}" text-anchor="end">'
                f"{_e(variant['variant_id'], 22)}</text>"
                f'<rect x="{bar_x}" y="{y + 1}" width="{length}" height="{bar_h}" rx="2"'
                f' fill="{color}"/>'
                f'<text class="value" x="{bar_x + length + 6}" y="{y + 12}">'
                f"{_e(_percent(rate))} ({stats['visitors']}/{variant['exposed']})</text></g>"
            )
            y += row_h
        y += gap
    parts.append(
        f'<line class="axis" x1="{bar_x}" y1="{y}" x2="{bar_x + bar_w}" y2="{y}"/>'
        f'<text class="tick" x="{bar_x}" y="{y + 16}">0%</text>'
        f'<text class="tick" x="{bar_x + bar_w}" y="{y + 16}" text-anchor="end">'
        f"{_e(_percent(scale))}</text></svg>"
    )
    return "".join(parts)


def _results_html(results: Mapping[str, Any]) -> str:
    tests: list[Mapping[str, Any]] = results["tests"]
    conversion_ids: list[str] = results["conversion_ids"]
    if not tests:
        return (
            '<p class="empty">No experiment data yet. “Experiment Viewed” and '
            "“Conversion Triggered” tracks show up here.</p>"
        )
    out: list[str] = []
    for test in tests:
        head = "".join(f'<th class="num">{_e(cid, 40)}</th>' for cid in conversion_ids)
        rows = []
        for variant in test["variants"]:
            stats = variant["conversions"]
            cells = "".join(
                f'<td class="num">{stats[cid]["visitors"]}'
                f' <span class="rate">{_e(_percent(stats[cid]["rate"]))}</span></td>'
                for cid in conversion_ids
            )
            rows.append(
                f'<tr><th scope="row"><code>{_e(variant["variant_id"], 60)}</code></th>'
                f'<td class="num">{variant["exposed"]}</td>{cells}</tr>'
            )
        out.append(
            f'<article class="test"><h3>Test <code>{_e(test["test_id"], 80)}</code></h3>'
            f'<table class="results"><thead><tr><th>Variant</th><th class="num">Exposed</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"{_svg_chart(test, conversion_ids)}</article>"
        )
    return "".join(out)


def _feed_row(call: Mapping[str, Any]) -> str:
    received = str(call.get("received_at") or "")
    detail = call.get("properties") if call.get("properties") is not None else call.get("traits")
    return (
        f"<tr{' class=dup' if call.get('duplicate') else ''}>"
        f'<td class="num">{_e(call["id"])}</td>'
        f'<td title="{_e(received)}">{_e(received[11:19])}</td>'
        f"<td>{_e(call.get('type') or '')}</td>"
        f"<td>{_e(call.get('event') or '')}</td>"
        f"<td><code>{_e(call.get('anonymous_id') or '', 40)}</code></td>"
        f"<td><code>{_e(call.get('user_id') or '', 40)}</code></td>"
        f"<td><code>{_e(call.get('message_id') or '', 40)}</code></td>"
        f'<td class="props"><code>{_e(_short_json(detail))}</code></td></tr>'
    )


_CSS: Final = """
:root { color-scheme: light; --muted: #667085; --line: #e4e7ec; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #1d2939; background: #f9fafb; }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 20px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0 0 10px; }
.muted, .rate { color: var(--muted); }
.test { background: #fff; border: 1px solid var(--line); border-radius: 8px;
        padding: 14px 16px; margin-bottom: 14px; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
thead th { font-weight: 600; color: #344054; background: #f2f4f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
table.results { margin-bottom: 12px; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all; }
.chart { max-width: 100%; height: auto; }
.chart text { font: 12px system-ui, sans-serif; fill: #344054; }
.chart .group { font-weight: 600; }
.chart .tick { fill: var(--muted); font-size: 11px; }
.chart .axis { stroke: #98a2b3; stroke-width: 1; }
.feed { background: #fff; border: 1px solid var(--line); }
.feed td { font-size: 13px; }
.feed .props { max-width: 360px; }
.feed tr.dup td { color: var(--muted); text-decoration: line-through; }
.empty { color: var(--muted); font-style: italic; }
.notice { background: #fffaeb; border: 1px solid #fedf89; padding: 6px 10px; border-radius: 6px; }
"""

_JS: Final = """
(() => {
  "use strict";
  const body = document.getElementById("feed-body");
  const status = document.getElementById("feed-status");
  const notice = document.getElementById("results-notice");
  const url = body.dataset.callsUrl;
  const maxRows = 50;
  let after = Number(body.dataset.after) || 0;
  const cell = (text, cls) => {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    const inner = cls === "code" || cls === "props" ? document.createElement("code") : td;
    inner.textContent = text;
    if (inner !== td) td.appendChild(inner);
    return td;
  };
  const short = (value) => {
    if (value === null || value === undefined) return "";
    const text = JSON.stringify(value);
    return text.length > 120 ? text.slice(0, 119) + "\\u2026" : text;
  };
  const clip = (text) => {
    const s = text === null || text === undefined ? "" : String(text);
    return s.length > 40 ? s.slice(0, 39) + "\\u2026" : s;
  };
  const add = (call) => {
    const tr = document.createElement("tr");
    if (call.duplicate) tr.className = "dup";
    const received = String(call.received_at || "");
    const time = cell(received.slice(11, 19));
    time.title = received;
    const detail = call.properties !== null && call.properties !== undefined
      ? call.properties : call.traits;
    tr.append(cell(String(call.id), "num"), time, cell(call.type || ""),
      cell(call.event || ""), cell(clip(call.anonymous_id), "code"),
      cell(clip(call.user_id), "code"), cell(clip(call.message_id), "code"),
      cell(short(detail), "props"));
    body.prepend(tr);
  };
  const poll = async () => {
    let full = false;
    try {
      const response = await fetch(`${url}?after=${after}&limit=200`, {cache: "no-store"});
      if (!response.ok) throw new Error(String(response.status));
      const calls = await response.json();
      if (calls.length) {
        const placeholder = document.getElementById("feed-empty");
        if (placeholder) placeholder.remove();
      }
      for (const call of calls) {
        add(call);
        after = Math.max(after, Number(call.id) || 0);
        if (call.type === "track" && (call.event === "Experiment Viewed"
            || call.event === "Conversion Triggered")) notice.hidden = false;
      }
      while (body.rows.length > maxRows) body.deleteRow(body.rows.length - 1);
      full = calls.length >= 200;
      status.textContent = "live";
    } catch (error) {
      status.textContent = "offline, retrying\\u2026";
    }
    setTimeout(poll, full ? 0 : 1000);
  };
  poll();
})();
"""


def _dashboard_html(
    results: Mapping[str, Any],
    latest: Sequence[Mapping[str, Any]],
    counts: tuple[int, int],
    calls_url: str,
    nonce: str,
) -> str:
    rows, distinct = counts
    after = max((int(call["id"]) for call in latest), default=0)
    feed_rows = "".join(_feed_row(call) for call in latest) or (
        '<tr id="feed-empty"><td colspan="8" class="empty">No calls yet.</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Segment sink · optibase-edge</title>
<style nonce="{nonce}">{_CSS}</style>
</head>
<body>
<header>
<h1>Segment sink</h1>
<p class="muted">Local Segment-compatible endpoint (<code>POST /v1/batch</code>).
{rows} calls received, {distinct} distinct messageIds ({rows - distinct} duplicates).
Results count distinct messageIds.</p>
</header>
<main>
<section id="results">
<h2>Results</h2>
<p id="results-notice" class="notice" hidden>New A/B events arrived.
<a href="">Reload results</a></p>
{_results_html(results)}
</section>
<section>
<h2>Live feed <small id="feed-status" class="muted">connecting…</small></h2>
<table class="feed">
<thead><tr><th class="num">#</th><th>Time (UTC)</th><th>Type</th><th>Event</th>
<th>anonymousId</th><th>userId</th><th>messageId</th><th>Properties / traits</th></tr></thead>
<tbody id="feed-body" data-after="{after}" data-calls-url="{_e(calls_url)}">{feed_rows}</tbody>
</table>
</section>
</main>
<script nonce="{nonce}">{_JS}</script>
</body>
</html>
"""


# --------------------------------------------------------------------------- app


def _query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo} and {hi}")
    return value


def create_sink_app(db_path: str, *, write_key: str | None = None) -> Starlette:
    """A Starlette app that accepts Segment HTTP API calls and shows A/B results.

    *db_path* is an SQLite file (``":memory:"`` works for tests).  When
    *write_key* is set, requests must carry it (HTTP Basic user name with an
    empty password, or ``writeKey`` in the body), else they get 401.
    """
    store = _Store(db_path)

    async def ingest(request: Request, call_type: str) -> Response:
        try:
            header_key: str | None = None
            authorization = request.headers.get("authorization")
            if authorization is not None:
                header_key = _basic_username(authorization)
            if (
                write_key is not None
                and header_key is not None
                and not _same_key(header_key, write_key)
            ):
                raise _RequestError(401, "invalid write key")
            raw = await _read_body(request)
            body = _decode_body(raw, request.headers.get("content-encoding", ""))
            payload = _parse_json(body)
            if (
                write_key is not None
                and header_key is None
                and not _same_key(payload.get("writeKey"), write_key)
            ):
                raise _RequestError(401, "missing or invalid write key")
            rows = _rows_from_payload(payload, call_type)
        except _RequestError as error:
            return _error_response(error)
        await run_in_threadpool(store.insert, rows)
        return _json_response({"success": True})

    def endpoint(call_type: str) -> Route:
        async def handle(request: Request) -> Response:
            return await ingest(request, call_type)

        handle.__name__ = f"ingest_{call_type}"
        return Route(f"/v1/{call_type}", handle, methods=["POST"], name=f"v1_{call_type}")

    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            return await reset(request)
        try:
            after = _query_int(request, "after", 0, -1, 2**63 - 1)
            limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        except _RequestError as error:
            return _error_response(error)
        return _json_response(await run_in_threadpool(store.calls_after, after, limit))

    async def results(request: Request) -> Response:
        tracks = await run_in_threadpool(store.ab_tracks)
        return _json_response(compute_results(tracks))

    async def reset(request: Request) -> Response:
        deleted = await run_in_threadpool(store.clear)
        return _json_response({"success": True, "deleted": deleted})

    def render_dashboard(calls_url: str, nonce: str) -> str:
        summary = compute_results(store.ab_tracks())
        return _dashboard_html(summary, store.latest(FEED_ROWS), store.counts(), calls_url, nonce)

    async def dashboard(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        page = await run_in_threadpool(render_dashboard, request.url_for("calls").path, nonce)
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}';"
            " connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none';"
            " frame-ancestors 'none'"
        )
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": csp,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()  # reopened lazily if the app is started again

    app = Starlette(
        routes=[
            Route("/", dashboard, methods=["GET"], name="dashboard"),
            *(endpoint(t) for t in ("batch", *sorted(_CALL_TYPES))),
            Route("/api/calls", calls, methods=["GET", "DELETE"], name="calls"),
            Route("/api/results", results, methods=["GET"], name="results"),
            Route("/api/reset", reset, methods=["POST"], name="reset"),
        ],
        lifespan=lifespan,
    )
    app.state.sink_store = store
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sink on its own: ``python -m demo_site.sink --port 8765``."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="Local Segment-compatible sink and dashboard.")
    parser.add_argument("--db", default="segment-sink.sqlite3", help="SQLite file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--write-key", default=None, help="require this write key")
    args = parser.parse_args(argv)
    uvicorn.run(create_sink_app(args.db, write_key=args.write_key), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

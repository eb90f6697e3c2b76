"""Segment messages to storable rows: validation, as strict as the sink promises.

Every message needs ``userId`` or ``anonymousId``, a track needs ``event``, an
alias needs ``previousId``; a message is at most 32 KB and a batch at most
2,500 messages.  Any invalid message rejects the whole request (a 400), where
Segment would answer 200, so bugs in the sender surface.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from demo_site.call_store import Row
from demo_site.json_responses import JSONValue, bad_request, compact_json

MAX_MESSAGE_BYTES: Final = 32 * 1024
MAX_BATCH_MESSAGES: Final = 2500
MAX_MESSAGE_ID_CHARS: Final = 100

CALL_TYPES: Final = frozenset({"identify", "track", "page", "screen", "group", "alias"})
"""The message types of Segment's HTTP Tracking API (``batch`` is a list of them)."""


def _dumps_or_none(value: JSONValue) -> str | None:
    return None if value is None else compact_json(value)


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
        return compact_json(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _scalar_text(value: JSONValue) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else compact_json(value)


def _object_or_none(
    message: Mapping[str, JSONValue], key: str, where: str
) -> dict[str, JSONValue] | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"{where}: {key} must be an object")
    return value


def _to_row(
    message: Mapping[str, JSONValue],
    *,
    call_type: str,
    where: str,
    received_at: str,
    defaults: Mapping[str, JSONValue],
) -> Row:
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
        raise bad_request(f"{where}: userId or anonymousId is required")
    if call_type == "alias" and _identity(effective.get("previousId")) is None:
        raise bad_request(f"{where}: alias requires previousId")

    event: str | None = None
    if call_type == "track":
        raw_event = effective.get("event")
        if not isinstance(raw_event, str) or not raw_event.strip():
            raise bad_request(f"{where}: track requires a non-empty event")
        event = raw_event
    elif call_type in ("page", "screen"):
        name = effective.get("name")
        event = name if isinstance(name, str) and name else None

    properties = _object_or_none(effective, "properties", where)
    traits = _object_or_none(effective, "traits", where)
    context = _object_or_none(effective, "context", where)

    message_id = effective.get("messageId")
    if message_id is None:
        message_id = f"sink-{uuid.uuid4()}"  # Segment assigns one when it is missing
    elif not isinstance(message_id, str) or not message_id:
        raise bad_request(f"{where}: messageId must be a non-empty string")
    elif len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise bad_request(f"{where}: messageId is longer than {MAX_MESSAGE_ID_CHARS} characters")

    raw = compact_json(effective)
    size = len(
        json.dumps(effective, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
    )
    if size > MAX_MESSAGE_BYTES:
        raise bad_request(f"{where}: message larger than 32 KB")

    return Row(
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


def rows_from_payload(payload: Mapping[str, JSONValue], call_type: str) -> list[Row]:
    """The rows of one request to ``/v1/<call_type>``; raises a 400 RequestError if invalid.

    For ``batch``, the payload's own ``context``, ``integrations`` and
    ``sentAt`` are defaults for every message in it.
    """
    received_at = _now()
    if call_type != "batch":
        return [
            _to_row(
                payload, call_type=call_type, where=call_type, received_at=received_at, defaults={}
            )
        ]
    batch = payload.get("batch")
    if not isinstance(batch, list):
        raise bad_request("batch: a 'batch' array is required")
    if len(batch) > MAX_BATCH_MESSAGES:
        raise bad_request(f"batch: more than {MAX_BATCH_MESSAGES} messages")
    defaults: dict[str, JSONValue] = {}
    for key in ("context", "integrations"):
        value = _object_or_none(payload, key, "batch")
        if value is not None:
            defaults[key] = value
    if payload.get("sentAt") is not None:
        defaults["sentAt"] = payload["sentAt"]
    rows: list[Row] = []
    for index, item in enumerate(batch):
        where = f"batch[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where}: each message must be an object")
        item_type = item.get("type")
        if item_type not in CALL_TYPES:
            raise bad_request(f"{where}: type must be one of {', '.join(sorted(CALL_TYPES))}")
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

"""Events to Segment HTTP API messages: pure functions, no I/O."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._events import (
    ConversionTriggered,
    Event,
    ExperimentViewed,
    Identify,
    RawRequest,
    RequestContext,
)
from ._version import __version__

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500_000  # "500 KB" read the strict way, for the whole body
MAX_BATCH_EVENTS = 2500
LIBRARY = {"name": "optibase-edge", "version": __version__}
_CAMPAIGN_FIELDS = {
    "utm_campaign": "name",
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_term": "term",
    "utm_content": "content",
}


class EventTooLarge(ValueError):
    """An event's JSON exceeds Segment's 32 KB limit; it is never sent."""


def message_id(event: Event) -> str:
    """At most 100 characters; the same for every copy of a once-only event."""
    key = event.once_key
    if key is None:
        assert isinstance(event, ConversionTriggered)
        return f"ob-{event.nonce}"
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()
    return f"ob-{digest}"


def to_message(event: Event) -> dict[str, Any]:
    """The Segment message (one item of a batch) for *event*."""
    context = event.context
    if isinstance(context, RawRequest):
        context = context.parsed()
    message: dict[str, Any]
    if isinstance(event, Identify):
        message = {"type": "identify"}
        if event.traits:
            message["traits"] = dict(event.traits)
    elif isinstance(event, ExperimentViewed):
        message = {
            "type": "track",
            "event": "Experiment Viewed",
            "properties": {
                "test_id": event.test_id,
                "variant_id": event.variant_id,
                "experiment_id": event.test_id,
                "experiment_name": event.test_name or event.test_id,
                "variation_id": event.variant_id,
                "variation_name": event.variant_name or event.variant_id,
            },
        }
    else:
        message = {
            "type": "track",
            "event": "Conversion Triggered",
            "properties": {
                "conversion_id": event.conversion_id,
                "conversion_type": event.conversion_type.value,
                "origin_url": (
                    event.origin_url
                    if event.origin_url is not None or context is None
                    else context.url
                ),
                "variants": [{"test_id": t, "variant_id": v} for t, v in event.variants],
            },
        }
    if event.visitor_id is not None:
        message["anonymousId"] = event.visitor_id
    if event.user_id is not None:
        message["userId"] = event.user_id
    message["messageId"] = message_id(event)
    message["timestamp"] = iso_time(event.timestamp)
    message["context"] = context_dict(context)
    return message


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON for one message; raises :class:`EventTooLarge` over 32 KB."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str)
    # A lone surrogate (hostile input can carry one) has no UTF-8 form; it only ever
    # sits inside a JSON string, where "\udc80" is its valid escape.
    body = text.encode("utf-8", "backslashreplace")
    if len(body) > MAX_EVENT_BYTES:
        raise EventTooLarge(f"{message.get('type')} {message.get('messageId')}: {len(body)} bytes")
    return body


def batch_body(items: Sequence[bytes], sent_at: float) -> bytes:
    """The ``/v1/batch`` body around already-encoded messages."""
    return b'{"batch":[' + b",".join(items) + b'],"sentAt":"' + iso_time(sent_at).encode() + b'"}'


def basic_credentials(write_key: str) -> str:
    """What follows ``Basic `` in ``Authorization``: the write key as user, no password."""
    return base64.b64encode(f"{write_key}:".encode()).decode()


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


BATCH_ENVELOPE_BYTES = len(batch_body([], 0.0))


def context_dict(context: RequestContext | None) -> dict[str, Any]:
    result: dict[str, Any] = {"library": LIBRARY}
    if context is None:
        return result
    if context.ip:
        result["ip"] = context.ip
    if context.user_agent:
        result["userAgent"] = context.user_agent
    locale = _locale(context.accept_language)
    if locale:
        result["locale"] = locale
    if context.url is not None or context.referrer:
        page: dict[str, Any] = {}
        if context.url is not None:
            try:
                parts = urlsplit(context.url)
            except ValueError:  # an unparseable URL is still worth reporting as it came
                parts = urlsplit("")
            page["url"] = context.url
            page["path"] = parts.path or "/"
            page["search"] = f"?{parts.query}" if parts.query else ""
            campaign = {
                _CAMPAIGN_FIELDS[k]: v
                for k, v in parse_qsl(parts.query, keep_blank_values=False)
                if k in _CAMPAIGN_FIELDS
            }
            if campaign:
                result["campaign"] = campaign
        page["referrer"] = context.referrer or ""
        result["page"] = page
    return result


def _locale(accept_language: str | None) -> str | None:
    if not accept_language:
        return None
    first = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    return first if first and first != "*" else None

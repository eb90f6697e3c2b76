"""The three things that happen to a visitor, as small immutable records.

Records are made on the request path, so they only capture raw values; turning
them into Segment JSON (parsing URLs, formatting times) happens in the
background, in :mod:`optibase_edge.segment`. They are named tuples rather than
frozen dataclasses: as immutable, and three times cheaper to make.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .config import ConversionType


class RequestContext(NamedTuple):
    """Raw facts about the request an event came from."""

    ip: str | None = None
    user_agent: str | None = None
    accept_language: str | None = None
    url: str | None = None
    referrer: str | None = None


class Identify(NamedTuple):
    visitor_id: str | None
    user_id: str | None
    timestamp: float
    traits: Mapping[str, Any] | None = None
    context: RequestContext | None = None

    @property
    def once_key(self) -> str:
        if self.user_id is None:
            return f"identify\x1f{self.visitor_id}"
        return f"identify\x1f{self.visitor_id}\x1f{self.user_id}"


class ExperimentViewed(NamedTuple):
    visitor_id: str
    user_id: str | None
    timestamp: float
    test_id: str
    variant_id: str
    test_name: str | None = None
    variant_name: str | None = None
    context: RequestContext | None = None

    @property
    def once_key(self) -> str:
        return f"exposure\x1f{self.visitor_id}\x1f{self.test_id}"


class ConversionTriggered(NamedTuple):
    visitor_id: str | None
    user_id: str | None
    timestamp: float
    conversion_id: str
    conversion_type: ConversionType
    origin_url: str | None
    variants: tuple[tuple[str, str], ...]
    one_per_visitor: bool
    nonce: str
    context: RequestContext | None = None

    @property
    def once_key(self) -> str | None:
        if not self.one_per_visitor:
            return None
        who = f"v\x1f{self.visitor_id}" if self.visitor_id else f"u\x1f{self.user_id}"
        return f"conversion\x1f{who}\x1f{self.conversion_id}"


Event = Identify | ExperimentViewed | ConversionTriggered

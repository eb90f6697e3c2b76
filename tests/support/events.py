"""Event records for tests, with plain defaults for whatever a test does not care about.

Unless given, an event's ``timestamp`` is now and a conversion's ``nonce`` is fresh
(so two conversions are two events, with two message IDs). Conversions are
PROGRAMMATIC and carry no variants. A *marker* ends a conversion's origin URL, so
that a fake transport or a capture can spot the event in a batch
(``tests.support.capture.BAD_MARKER`` gets its batch refused).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from optibase_edge import ConversionType
from optibase_edge._events import ConversionTriggered, ExperimentViewed, Identify

SHOP = "https://shop.example/"


def identify(
    visitor_id: str | None,
    user_id: str | None = None,
    traits: Mapping[str, Any] | None = None,
    *,
    timestamp: float | None = None,
) -> Identify:
    """An Identify: once-only per visitor (and user)."""
    return Identify(visitor_id, user_id, _now(timestamp), traits)


def viewed(
    visitor_id: str,
    test_id: str = "hero",
    variant_id: str = "control",
    *,
    user_id: str | None = None,
    test_name: str | None = None,
    variant_name: str | None = None,
    timestamp: float | None = None,
) -> ExperimentViewed:
    """An Experiment Viewed: once-only per visitor and test."""
    return ExperimentViewed(
        visitor_id, user_id, _now(timestamp), test_id, variant_id, test_name, variant_name
    )


def conversion(
    visitor_id: str | None = "v",
    conversion_id: str = "purchase",
    *,
    user_id: str | None = None,
    one_per_visitor: bool = False,
    marker: str = "",
    nonce: str | None = None,
    timestamp: float | None = None,
) -> ConversionTriggered:
    """A Conversion Triggered on ``SHOP + marker``: once-only if *one_per_visitor*."""
    return ConversionTriggered(
        visitor_id=visitor_id,
        user_id=user_id,
        timestamp=_now(timestamp),
        conversion_id=conversion_id,
        conversion_type=ConversionType.PROGRAMMATIC,
        origin_url=SHOP + marker,
        variants=(),
        one_per_visitor=one_per_visitor,
        nonce=uuid.uuid4().hex if nonce is None else nonce,
    )


def conversions(n: int, tag: str = "c", *, marker: str = "") -> list[ConversionTriggered]:
    """*n* repeatable conversions, of visitors ``v-{tag}0`` to ``v-{tag}{n-1}``."""
    return [conversion(f"v-{tag}{i}", marker=marker) for i in range(n)]


def _now(timestamp: float | None) -> float:
    return time.time() if timestamp is None else timestamp

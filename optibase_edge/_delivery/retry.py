"""The retry policy: what a batch's failed attempt leads to, and how long to wait.

Network errors (status 0), 408, 429 and 5xx other than 501 and 505 are retried
with full-jitter exponential backoff, never sooner than ``Retry-After`` (capped
at a minute), within the batch's total retry time. 400 and 413 split the batch,
so one bad event cannot sink the rest. Anything else fails the batch.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from datetime import UTC
from typing import Literal, NamedTuple

RETRY_AFTER_CAP = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
_NOT_RETRIED_5XX = {501, 505}
_SPLIT_STATUSES = {400, 413}


class Step(NamedTuple):
    """What to do after an attempt: ``wait`` seconds before a ``retry``."""

    action: Literal["sent", "split", "failed", "retry", "gave_up"]
    wait: float = 0.0


def next_step(
    status: int, retry_after: float | None, batch_size: int, attempt: int, remaining: float
) -> Step:
    """The step after attempt number *attempt* (0-based) answered *status*.

    *remaining* is what is left of the batch's retry time, in seconds.
    """
    if 200 <= status < 300:
        return Step("sent")
    if status in _SPLIT_STATUSES and batch_size > 1:
        return Step("split")
    if not is_retryable(status):
        return Step("failed")
    if retry_after is not None:
        retry_after = min(retry_after, RETRY_AFTER_CAP)
    if remaining <= 0 or (retry_after is not None and retry_after > remaining):
        return Step("gave_up")
    return Step("retry", min(backoff(attempt, retry_after), remaining))


def is_retryable(status: int) -> bool:
    """Network errors (0), 408, 429 and 5xx except 501 and 505."""
    return status in (0, 408, 429) or (500 <= status < 600 and status not in _NOT_RETRIED_5XX)


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Full jitter over a capped exponential; never sooner than *retry_after*.

    Jitter even under Retry-After keeps many processes told the same thing from
    coming back in the same instant, and stops a ``Retry-After: 0`` busy loop.
    """
    jitter = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 32)))
    if retry_after is None:
        return jitter
    return max(min(retry_after, RETRY_AFTER_CAP), jitter)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())

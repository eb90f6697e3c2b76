"""Delivery's warnings: rate-limited, and scrubbed of the write key."""

from __future__ import annotations

import logging
import time

from .._segment import basic_credentials

logger = logging.getLogger("optibase_edge")


class RateLimitedLog:
    """At most one warning per kind every ``interval`` seconds, with a count of the rest.

    Every message is scrubbed of the write key (and its Basic-auth form), whatever
    an exception from a transport or a store may have put in it.
    """

    def __init__(self, write_key: str | None, interval: float = 10.0) -> None:
        self._interval = interval
        self._secrets = (write_key, basic_credentials(write_key)) if write_key else ()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if kind in self._last and now - self._last[kind] < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        for secret in self._secrets:
            message = message.replace(secret, "***")
        logger.warning(message)

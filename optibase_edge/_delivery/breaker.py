"""When to ask the dedupe store again after it failed: a circuit breaker with a growing cooldown.

While a store is down, asking it with every chunk of events would cost each
chunk the store's timeout (or a refused connection, at best) and hold up the
sender. After a failure the breaker keeps the sender away from the store for a
cooldown, doubling with each failure in a row from :data:`FIRST_COOLDOWN` up to
:data:`LONGEST_COOLDOWN`; then one claim probes it. A success closes it.
Plain data and a clock: the sender decides what to do meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_COOLDOWN = 0.1  # seconds: a blip costs little
LONGEST_COOLDOWN = 2.0  # seconds: a store back from an outage is used again within this


class Breaker:
    """Whether the store may be asked now, from its recent failures."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures = 0  # in a row
        self._until = 0.0  # the clock's time when the store may be asked again

    def allows(self) -> bool:
        """True when the store may be asked: no failure, or its cooldown is over."""
        return self._clock() >= self._until

    def wait(self) -> float:
        """Seconds until the store may be asked again (0 when it may be now)."""
        return max(0.0, self._until - self._clock())

    def failed(self) -> None:
        """The store failed: keep away from it for the next, longer, cooldown."""
        cooldown = min(LONGEST_COOLDOWN, FIRST_COOLDOWN * 2.0**self._failures)
        self._failures += 1
        self._until = self._clock() + cooldown

    def succeeded(self) -> None:
        """The store answered: ask it freely again."""
        self._failures = 0
        self._until = 0.0

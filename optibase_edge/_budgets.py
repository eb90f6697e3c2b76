"""How often one key may do something: token buckets in a bounded LRU (pure; the clock is given).

The collector spends one per beacon, per visitor and per client address, so a
script holding one cookie, or one address, cannot record without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

_NS = 1_000_000_000


class Budgets:
    """A token bucket per key: *burst* at once, then *per_second*.

    A key's bucket holds at most *burst* tokens and refills at *per_second*;
    :meth:`spend` takes one, or says how long until there is one. A bucket is
    kept as one integer, the instant (in clock nanoseconds) it will be full
    again (the GCRA form of a token bucket), so there is no float drift: a
    burst of exactly *burst* passes at any instant.

    At most *maxsize* keys are kept, the least recently spent (or refused)
    pushed out first: about 130 bytes a key plus the key's string (85 for a
    visitor ID, 60 to 90 for an address), so at most 14 MB at the default
    65,536 (measured with tracemalloc). A key pushed out starts full again, as
    it would anyway after ``burst / per_second`` seconds idle, so the bound
    only matters when more keys than that are active at once; and what it
    gives back, a fresh bucket, is what a new key gets anyway.
    """

    __slots__ = ("_clock", "_full_at", "_interval", "_maxsize", "_tolerance")

    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        maxsize: int = 65_536,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if burst < 1 or not per_second > 0 or maxsize < 1:
            raise ValueError("burst, per_second and maxsize must be positive")
        self._interval = max(1, round(_NS / per_second))  # nanoseconds a token takes to refill
        # How far ahead of now "full again" may be while a token is left: burst - 1 of them.
        self._tolerance = (burst - 1) * self._interval
        self._maxsize = maxsize
        self._clock = clock
        self._full_at: OrderedDict[str, int] = OrderedDict()

    def spend(self, key: str) -> float:
        """Take a token from *key*'s bucket: 0.0 if there was one, else the seconds until one.

        A refused spend takes nothing (a client that keeps trying is not held
        off for longer) but keeps the key among the most recent, so an active
        abuser is never the one pushed out.
        """
        now = self._clock()
        buckets = self._full_at
        full_at = max(buckets.get(key, now), now)
        short = full_at - self._tolerance - now
        if short > 0:
            buckets.move_to_end(key)
            return short / _NS
        buckets[key] = full_at + self._interval
        buckets.move_to_end(key)
        if len(buckets) > self._maxsize:
            buckets.popitem(last=False)
        return 0.0

    def __len__(self) -> int:
        return len(self._full_at)

"""Once-only bookkeeping: a synchronous local tier and an async shared store.

The request path only ever asks the local tier (:class:`LocalSeen`), which is a
plain in-process LRU.  The authoritative claim against a :class:`DedupeStore`
(shared by processes and hosts when it is a :class:`~optibase_edge.RedisStore`)
happens in the delivery task, before an event is sent.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cachetools import LRUCache


@runtime_checkable
class DedupeStore(Protocol):
    """Where once-only keys are claimed, atomically, first writer wins."""

    async def claim(self, key: str, ttl: float) -> bool:
        """Record *key* for *ttl* seconds; True if this call was the first to."""
        ...

    async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        """:meth:`claim` for each key, in order, in as few round trips as the store allows."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


class MemoryStore:
    """A bounded in-process :class:`DedupeStore` (an LRU with per-key expiry).

    Right for a single process. When a site runs several processes or hosts,
    use :class:`~optibase_edge.RedisStore` so they share one set of claims.
    """

    def __init__(self, maxsize: int = 1_000_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._claims: LRUCache[int, float] = LRUCache(maxsize=maxsize)

    async def claim(self, key: str, ttl: float) -> bool:
        digest = _digest(key)
        now = time.monotonic()
        expires_at = self._claims.get(digest)
        if expires_at is not None and expires_at > now:
            return False
        self._claims[digest] = now + ttl
        return True

    async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        return [await self.claim(key, ttl) for key in keys]

    async def aclose(self) -> None:
        self._claims.clear()

    def __len__(self) -> int:
        return len(self._claims)


class LocalSeen:
    """A bounded, synchronous LRU set of once-only keys for the request path.

    Keys are kept as 64-bit digests, not as strings, so an entry costs an int
    and an ordered-dict slot (about 130 bytes) whatever the length of the key.
    """

    __slots__ = ("_maxsize", "_seen")

    def __init__(self, maxsize: int = 1_000_000) -> None:
        self._maxsize = maxsize
        self._seen: OrderedDict[int, None] = OrderedDict()

    def first_time(self, key: str) -> bool:
        """True (and remember *key*) if *key* was not seen; False otherwise."""
        digest = _digest(key)
        seen = self._seen
        if digest in seen:
            seen.move_to_end(digest)
            return False
        seen[digest] = None
        if len(seen) > self._maxsize:
            seen.popitem(last=False)
        return True

    def forget(self, key: str) -> None:
        """Drop *key*, so that it counts as unseen again."""
        self._seen.pop(_digest(key), None)

    def __len__(self) -> int:
        return len(self._seen)


def _digest(key: str) -> int:
    # 64 bits: at a million live keys the chance of any collision is about 3e-8.
    raw = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "little")

"""Where once-only keys are claimed before an event is sent: the store protocol, in memory.

The delivery task claims every once-only key here, first writer wins, so an
event is sent once however many requests, processes or hosts produced it (as
long as they share the store). :class:`MemoryStore` serves one process;
:class:`~optibase_edge.RedisStore` is the shared one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from cachetools import LRUCache

from .._seen import key_digest


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
        digest = key_digest(key)
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

"""The request path's once-only memory: a synchronous, in-process LRU of event keys.

The request path only ever asks this local tier. The authoritative claim
against a shared :class:`~optibase_edge.DedupeStore` (a
:class:`~optibase_edge.RedisStore` when processes or hosts share one) happens
in the background, before an event is sent.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict


class LocalSeen:
    """A bounded LRU set of once-only keys.

    Keys are kept as 64-bit digests, not as strings, so an entry costs an int
    and an ordered-dict slot (about 130 bytes) whatever the length of the key.
    """

    __slots__ = ("_maxsize", "_seen")

    def __init__(self, maxsize: int = 1_000_000) -> None:
        self._maxsize = maxsize
        self._seen: OrderedDict[int, None] = OrderedDict()

    def first_time(self, key: str) -> bool:
        """True (and remember *key*) if *key* was not seen; False otherwise."""
        digest = key_digest(key)
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
        self._seen.pop(key_digest(key), None)

    def __len__(self) -> int:
        return len(self._seen)


def key_digest(key: str) -> int:
    """A 64-bit digest of a once-only key.

    At a million live keys the chance of any collision is about 3e-8.
    """
    raw = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "little")

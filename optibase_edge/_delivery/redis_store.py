"""A :class:`~optibase_edge.DedupeStore` on Redis, shared by processes and hosts.

Needs the optional ``redis`` extra (``pip install "optibase-edge[redis]"``).  This
module imports without it; only constructing a :class:`RedisStore` requires it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

_SCHEMES = frozenset({"redis", "rediss", "unix"})
# Connections per client (per event loop).  Claims beyond that wait for a free
# one, up to _POOL_WAIT_FACTOR * socket_timeout, instead of failing at once.
_MAX_CONNECTIONS = 50
_POOL_WAIT_FACTOR = 5
_INSTALL_HINT = 'RedisStore needs the redis package: pip install "optibase-edge[redis]"'


class RedisStore:
    """A :class:`~optibase_edge.DedupeStore` kept in Redis.

    Every process and host that points at the same Redis database and uses the
    same *prefix* shares one set of claims, so an event is claimed (and then
    sent) once across all of them.

    :meth:`claim` is one round trip, ``SET <prefix><digest> 1 NX PX <ttl_ms>``,
    and returns True only when this call created the key.  The key is the
    *prefix* followed by a 32-character hex BLAKE2b digest of the claimed key
    (encoded as UTF-8, lone surrogates allowed), so a stored key is
    ``len(prefix) + 32`` characters however long the claimed key is.

    Errors are not swallowed: if Redis is unreachable or does not answer within
    *socket_timeout* seconds, :meth:`claim` raises (a
    ``redis.exceptions.ConnectionError`` or ``redis.exceptions.TimeoutError``),
    and the caller decides what to do.  The client does not retry a command by
    itself: a ``SET NX`` that reached the server before its answer was lost
    would, if resent, report the caller's own claim as someone else's.  So
    after an error the claim's outcome is unknown; it may have been recorded.

    The connection is made lazily, in the event loop that first calls
    :meth:`claim`.  Redis connections belong to the loop they were made in, so
    when :meth:`claim` is later called from a different loop (for instance, a
    second ``asyncio.run``) the store makes a fresh client for that loop and
    drops the old one.  Use the store from one event loop at a time.

    Each client keeps at most 50 connections (``?max_connections=N`` in the
    URL changes that); a burst of more concurrent claims queues for them, and a
    claim that cannot get a connection within ``5 * socket_timeout`` seconds
    raises ``redis.exceptions.ConnectionError``.

    :param url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, in the
        form that ``redis.asyncio.Redis.from_url`` accepts (a password in it is
        never echoed in error messages from this class).
    :param prefix: put before every stored key; give each site or environment
        sharing a Redis database its own.
    :param socket_timeout: seconds allowed to connect and for each reply.
    :raises ImportError: if the ``redis`` package is not installed.
    :raises ValueError: for a URL with another scheme, or a bad *socket_timeout*.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "optibase:",
        socket_timeout: float = 2.0,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(
                "RedisStore URL scheme must be redis://, rediss:// or unix://, "
                + (f"not {scheme + '://'!r}" if scheme else "and this URL has none")
            )
        if not (isinstance(socket_timeout, int | float) and 0 < socket_timeout < math.inf):
            raise ValueError("socket_timeout must be a positive, finite number of seconds")
        try:
            from redis.asyncio.connection import parse_url
        except ImportError as exc:
            if exc.name is not None and exc.name.partition(".")[0] != "redis":
                raise
            raise ImportError(_INSTALL_HINT, name=exc.name) from exc
        parse_url(url)  # port, db and query arguments: fail now rather than at first claim

        self._url = url
        self._prefix = prefix
        self._socket_timeout = float(socket_timeout)
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def prefix(self) -> str:
        """What every stored key starts with."""
        return self._prefix

    async def claim(self, key: str, ttl: float) -> bool:
        """Claim *key* for *ttl* seconds; True only if no live claim existed.

        *ttl* is rounded up to whole milliseconds, at least one.
        """
        ttl_ms = _milliseconds(ttl)
        created = await self._current_client().set(self.redis_key(key), b"1", nx=True, px=ttl_ms)
        return bool(created)  # True when set; None when a live claim exists

    async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        """:meth:`claim` for each key, in one pipelined round trip (not a transaction)."""
        ttl_ms = _milliseconds(ttl)
        if not keys:
            return []
        async with self._current_client().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(self.redis_key(key), b"1", nx=True, px=ttl_ms)
            return [bool(created) for created in await pipe.execute()]

    def redis_key(self, key: str) -> str:
        """The Redis key that a claim of *key* is stored under."""
        raw = key.encode("utf-8", "surrogatepass")
        return self._prefix + hashlib.blake2b(raw, digest_size=16).hexdigest()

    async def aclose(self) -> None:
        """Close the connections.

        A later :meth:`claim` connects again, so closing twice, or using the
        store after a restart of the application, is harmless.
        """
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
        # A client made in another loop cannot be closed from this one; it is
        # dropped, and its sockets close when it is garbage collected.

    def _current_client(self) -> Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # Any client made in an earlier loop is dropped, not closed (see aclose).
            self._client = self._make_client()
            self._loop = loop
        return self._client

    def _make_client(self) -> Redis:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=_MAX_CONNECTIONS,
            timeout=_POOL_WAIT_FACTOR * self._socket_timeout,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            # No retries: a resent SET NX can turn our own claim into a "no".
            retry=Retry(NoBackoff(), 0),
        )
        return Redis.from_pool(pool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self._prefix!r})"


def _milliseconds(ttl: float) -> int:
    """*ttl* seconds as Redis's PX: whole milliseconds, rounded up, at least one."""
    if not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))

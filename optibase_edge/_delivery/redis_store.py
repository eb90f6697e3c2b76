"""A :class:`~optibase_edge.DedupeStore` on Redis, shared by processes and hosts.

Needs the optional ``redis`` extra (``pip install "optibase-edge[redis]"``).  This
module imports without it; only constructing a :class:`RedisStore` requires it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cachetools import LRUCache

from .per_loop import PerLoop

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["RedisStore"]

_SCHEMES = frozenset({"redis", "rediss", "unix"})
# Connections per client (per event loop).  Claims beyond that wait for a free
# one, up to _POOL_WAIT_FACTOR * socket_timeout, instead of failing at once.
_MAX_CONNECTIONS = 50
_POOL_WAIT_FACTOR = 5
_INSTALL_HINT = 'RedisStore needs the redis package: pip install "optibase-edge[redis]"'
# Claims whose outcome an error left unknown, remembered with their tokens so
# that claiming the key again can recognise an earlier claim as this store's own.
_IN_DOUBT_MAX = 100_000


class RedisStore:
    """A :class:`~optibase_edge.DedupeStore` kept in Redis.

    Every process and host that points at the same Redis database and uses the
    same *prefix* shares one set of claims, so an event is claimed (and then
    sent) once across all of them.

    A claim is one round trip, a pipeline of ``SET <prefix><digest> <token> NX
    PX <ttl_ms>`` and ``GET`` of the same key, and it is this store's when the
    ``SET`` created the key or the ``GET`` reads back its own token (16 random
    hex characters per claim). The key is the *prefix* followed by a
    32-character hex BLAKE2b digest of the claimed key (encoded as UTF-8, lone
    surrogates allowed), so a stored key is ``len(prefix) + 32`` characters
    however long the claimed key is.

    Why a token: a ``SET NX`` that reached the server before its answer was
    lost would, if simply resent, report the caller's own claim as someone
    else's, and the event would never be sent. With the token read back, a
    resent claim (by a client's own retries, or by the caller after an error)
    still recognises itself.

    Errors are not swallowed: if Redis is unreachable or does not answer in
    time, :meth:`claim` and :meth:`claim_many` raise
    (``redis.exceptions.ConnectionError``, ``redis.exceptions.TimeoutError``),
    and the caller decides what to do. The outcome of the failed claims is
    then unknown, so the store remembers their tokens (for the latest 100,000
    keys): the next claim of such a key, in this process, reuses its token and
    answers True if the earlier claim was recorded after all. It answers True
    once: a later claim of the key loses as usual.

    **From a URL** the store makes its own client, lazily, in the event loop
    that first claims. Redis connections belong to the loop they were made in,
    so when a claim comes from a different loop (for instance, a second
    ``asyncio.run``) the store makes a fresh client for that loop and drops the
    old one. Use the store from one event loop at a time. That client keeps at
    most 50 connections (``?max_connections=N`` in the URL changes that); a
    burst of more concurrent claims queues for them, and a claim that cannot
    get a connection within ``5 * socket_timeout`` seconds raises
    ``redis.exceptions.ConnectionError``. The client does not retry.

    Whichever the client, a claim that fails with a ``ConnectionError`` (a
    connection found closed) is resent once, at once, on a new connection:
    that is how claims work again as soon as Redis is back after a restart at
    the same address. A timeout is not retried here.

    **From a ready client** (``redis.asyncio.Redis(...)``,
    ``Sentinel(...).master_for(...)``, ``redis.asyncio.RedisCluster(...)``)
    the store uses it as it is: its timeouts, retries and pool apply (while
    Redis is down, each claim waits out the client's retries: make it with few),
    and *socket_timeout* does not. The store does not own it: use the store from
    the event loop the client was made for, and close the client yourself
    after the application has shut down (:meth:`aclose` leaves it open, since
    it may serve other code). Claims are pipelined with ``transaction=False``,
    which a cluster client accepts for keys in different hash slots (it
    routes each command to its slot's node).

    :param url: a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, in the
        form that ``redis.asyncio.Redis.from_url`` accepts (a password in it is
        never echoed in error messages from this class); or a ready
        ``redis.asyncio`` client, as above.
    :param prefix: put before every stored key; give each site or environment
        sharing a Redis database its own.
    :param socket_timeout: seconds allowed to connect and for each reply (for a
        client the store makes from a URL).
    :raises ImportError: if the ``redis`` package is not installed.
    :raises ValueError: for a URL with another scheme, or a bad *socket_timeout*.
    :raises TypeError: for a client that is not an asyncio one.
    """

    def __init__(
        self,
        url: str | Redis | RedisCluster = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "optibase:",
        socket_timeout: float = 2.0,
    ) -> None:
        if not (isinstance(socket_timeout, int | float) and 0 < socket_timeout < math.inf):
            raise ValueError("socket_timeout must be a positive, finite number of seconds")
        self._given: Redis | RedisCluster | None = None
        if isinstance(url, str):
            _check_url(url)
        else:
            _check_client(url)
            self._given = url
        self._url = url
        self._prefix = prefix
        self._socket_timeout = float(socket_timeout)
        self._clients = PerLoop(self._make_client)
        self._in_doubt: LRUCache[str, str] = LRUCache(maxsize=_IN_DOUBT_MAX)

    @property
    def prefix(self) -> str:
        """What every stored key starts with."""
        return self._prefix

    async def claim(self, key: str, ttl: float) -> bool:
        """Claim *key* for *ttl* seconds; True only if no live claim existed (see the class).

        *ttl* is rounded up to whole milliseconds, at least one.
        """
        return (await self.claim_many([key], ttl))[0]

    async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        """:meth:`claim` for each key, in one pipelined round trip (not a transaction).

        A key repeated in *keys* is claimed by its first occurrence only.
        """
        ttl_ms = _milliseconds(ttl)
        if not keys:
            return []
        in_doubt = self._in_doubt
        redis_keys = [self.redis_key(key) for key in keys]
        # A key in doubt claims again with its old token; its repeats get fresh ones.
        tokens = [in_doubt.pop(rkey, "") or secrets.token_hex(8) for rkey in redis_keys]
        import redis.exceptions

        try:
            try:
                replies = await self._set_and_get(redis_keys, tokens, ttl_ms)
            except redis.exceptions.ConnectionError:
                # Once more, at once: a restarted server leaves every pooled
                # connection closed, and redis-py hands them out as they are (its
                # check for a closed one is off with maintenance notifications, on
                # by default over RESP3); the failed one was dropped, so this
                # reconnects. The tokens make the resend safe.
                replies = await self._set_and_get(redis_keys, tokens, ttl_ms)
        except BaseException:
            for rkey, token in zip(redis_keys, tokens, strict=True):
                in_doubt.setdefault(rkey, token)  # a repeat's SET came second: the first's counts
            raise
        # SET answers True when it created the key, None when the key existed;
        # the GET settles whose it is (decoded or not, per the client's settings).
        return [
            bool(created) or stored == token or stored == token.encode()
            for created, stored, token in zip(replies[::2], replies[1::2], tokens, strict=True)
        ]

    async def _set_and_get(
        self, redis_keys: list[str], tokens: list[str], ttl_ms: int
    ) -> list[object]:
        async with self._current_client().pipeline(transaction=False) as pipe:
            for rkey, token in zip(redis_keys, tokens, strict=True):
                pipe.set(rkey, token, nx=True, px=ttl_ms)
                pipe.get(rkey)
            replies: list[object] = await pipe.execute()
        return replies

    def redis_key(self, key: str) -> str:
        """The Redis key that a claim of *key* is stored under."""
        raw = key.encode("utf-8", "surrogatepass")
        return self._prefix + hashlib.blake2b(raw, digest_size=16).hexdigest()

    async def aclose(self) -> None:
        """Close the connections of a client the store made; a ready client is left open.

        A later :meth:`claim` connects again, so closing twice, or using the
        store after a restart of the application, is harmless.
        """
        await self._clients.aclose()

    def _current_client(self) -> Redis | RedisCluster:
        return self._given if self._given is not None else self._clients.get()

    def _make_client(self) -> Redis:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert isinstance(self._url, str)
        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=_MAX_CONNECTIONS,
            timeout=_POOL_WAIT_FACTOR * self._socket_timeout,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            # No retries by the client: claim_many resends once itself, on a
            # closed connection only; the caller decides when to ask again.
            retry=Retry(NoBackoff(), 0),
        )
        return Redis.from_pool(pool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self._prefix!r})"


def _check_url(url: str) -> None:
    """Raise unless *url* is one ``redis.asyncio`` can connect to (it does not connect)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            "RedisStore URL scheme must be redis://, rediss:// or unix://, "
            + (f"not {scheme + '://'!r}" if scheme else "and this URL has none")
        )
    try:
        from redis.asyncio.connection import parse_url
    except ImportError as exc:
        if exc.name is not None and exc.name.partition(".")[0] != "redis":
            raise
        raise ImportError(_INSTALL_HINT, name=exc.name) from exc
    parse_url(url)  # port, db and query arguments: fail now rather than at first claim


def _check_client(client: object) -> None:
    """Raise unless *client* looks like a ``redis.asyncio`` client (pipelines are all it needs)."""
    try:
        import redis
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT, name=exc.name) from exc
    if isinstance(client, redis.Redis | redis.RedisCluster):
        raise TypeError(
            f"RedisStore needs an asyncio client (redis.asyncio.{type(client).__name__}), "
            f"not redis.{type(client).__name__}"
        )
    if not callable(getattr(client, "pipeline", None)):
        raise TypeError(
            "RedisStore takes a redis:// URL or a redis.asyncio client, "
            f"not {type(client).__name__}"
        )


def _milliseconds(ttl: float) -> int:
    """*ttl* seconds as Redis's PX: whole milliseconds, rounded up, at least one."""
    if not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))

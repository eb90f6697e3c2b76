"""The spool: undelivered messages kept outside the process, for whoever sends next.

What delivery cannot send from memory goes here: what is left at shutdown, and,
while the buffer is full, the overflow. It is taken back by this process when
there is room, or by the next process to start. Two kinds behind one interface,
:class:`Spool`: a file (``spool_path`` a path) and a Redis list (``spool_path``
a ``redis://`` or ``rediss://`` URL), for hosts that lose their disk.

A record is one line of compact JSON: a Segment message as it is sent, or, for
an event whose once-only key was never claimed, ``{"onceKey": KEY, "message":
MESSAGE}``, and whoever takes it claims KEY in the dedupe store before sending.
Anything else (a line torn by a crash, something another program wrote) is
skipped and counted.

Every record is taken by one taker only: a file is renamed away before it is
read (of several processes starting at once, one gets it), a Redis list is
popped (``LPOP`` with a count: atomic).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Protocol

from .._config import ConfigError
from .._segment import MAX_EVENT_BYTES
from .._settings import RedisUrl
from .per_loop import PerLoop

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_KEY = "optibase:spool"
# A record is a message, or a message and a key (each key far under a message's size).
_MAX_RECORD_BYTES = 2 * MAX_EVENT_BYTES


class Record(NamedTuple):
    """One spooled message, and the once-only key to claim before sending it, if any."""

    message: bytes
    once_key: str | None = None


class Taken(NamedTuple):
    """What :meth:`Spool.take` got: the records, and how many it skipped as unreadable."""

    records: list[Record]
    skipped: int


class Spool(Protocol):
    """Where records wait outside the process. Methods raise on I/O errors.

    ``str(spool)`` says where, without credentials (for logs).
    """

    async def append(self, records: Sequence[bytes]) -> None:
        """Add *records* (made by :func:`record`), all in one write."""
        ...

    async def take(self, limit: int) -> Taken | None:
        """Take up to *limit* readable records out; None when there is nothing to take.

        Fewer than *limit* (readable and skipped together) means the spool is
        now empty, as far as this taker knows.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the spool may be used again afterwards."""
        ...


def record(message: bytes, once_key: str | None = None) -> bytes:
    """The spool record for an encoded *message* (with the key to claim first, if any)."""
    if once_key is None:
        return message
    key = json.dumps(once_key, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return b'{"onceKey":' + key + b',"message":' + message + b"}"


def parse(line: bytes) -> Record | None:
    """The :class:`Record` in *line*, or None when it is not one of ours."""
    if not line or len(line) > _MAX_RECORD_BYTES:
        return None
    try:
        value = json.loads(line)
    except ValueError:  # bad JSON or bad UTF-8
        return None
    if not isinstance(value, dict):
        return None
    if "onceKey" in value:
        key, message = value.get("onceKey"), value.get("message")
        if not isinstance(key, str) or not _is_message(message):
            return None
        # The same compact form as _segment.encode, so the same bytes go out.
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        return Record(text.encode("utf-8", "surrogatepass"), key)
    if len(line) > MAX_EVENT_BYTES or not _is_message(value):
        return None
    return Record(line)


def _is_message(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("messageId"), str)
        and isinstance(value.get("type"), str)
    )


def open_spool(target: Path | RedisUrl, timeout: float) -> Spool:
    """The spool at *target*; Redis commands time out after *timeout* seconds."""
    if isinstance(target, RedisUrl):
        return RedisSpool(target, timeout)
    return FileSpool(target)


# -- a file -----------------------------------------------------------------------------


class FileSpool:
    """A local file: ``O_APPEND`` writes, taken by renaming it away.

    Writers append whole records with one ``O_APPEND`` write, each write
    starting with a newline, so a crashed writer's torn line stays a line of its
    own. Both calls run in a worker thread: a local write is usually quick, but
    a full or networked disk can stall for seconds, and the event loop serves
    pages meanwhile. Once started, a call finishes even if its caller is
    cancelled, so a record is never half-taken.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def append(self, records: Sequence[bytes]) -> None:
        await asyncio.to_thread(append_file, self.path, records)

    async def take(self, limit: int) -> Taken | None:
        return await asyncio.to_thread(take_file, self.path, limit)

    async def aclose(self) -> None:
        return None

    def __str__(self) -> str:
        return str(self.path)


def append_file(path: Path, records: Sequence[bytes]) -> None:
    """Append *records* to the file at *path*; raises ``OSError``."""
    # Leading newline: if a crashed writer left a torn line, it stays a line of
    # its own (skipped on reading) instead of swallowing our first record.
    data = b"\n" + b"".join(item + b"\n" for item in records)
    # O_APPEND and one write: processes sharing a spool do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:  # a regular file only writes short on a full disk or a signal
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def take_file(path: Path, limit: int) -> Taken | None:
    """Take up to *limit* records from the file at *path*; raises ``OSError``.

    The file is renamed first, so only this process reads it; what is beyond
    *limit* is appended back. If reading fails, the renamed file is kept (the
    error says where) rather than lost.
    """
    taken = path.with_name(f"{path.name}.{os.getpid()}.taking")
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None
    records: list[Record] = []
    skipped = 0
    with open(taken, "rb") as file:
        lines = _lines(file)
        for line in lines:
            if len(records) == limit:
                rest = [line, *(more for more in lines if more)]
                append_file(path, rest)
                break
            if (item := parse(line)) is not None:
                records.append(item)
            elif line:
                skipped += 1  # a torn tail from a crash, or not ours
    # Read already: at worst a stale file is left behind; nothing is sent twice.
    with contextlib.suppress(OSError):
        os.unlink(taken)
    return Taken(records, skipped)


def _lines(file: BinaryIO) -> Iterator[bytes]:
    """Stripped lines; an over-long one (corrupt: no record is that big) yields b"?"."""
    limit = _MAX_RECORD_BYTES + 2
    while True:
        line = file.readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip to the end of it
                line = file.readline(limit)
            yield b"?"
            continue
        yield line.strip()


# -- a Redis list -----------------------------------------------------------------------


class RedisSpool:
    """A Redis list, ``optibase:spool`` in the URL's database: survives a replaced host.

    ``RPUSH`` appends (one command for all the records of an append), ``LPOP``
    with a count takes (atomic: of several takers, each record goes to one).
    The client is ``redis.asyncio``: a blocking client would stall every page
    on the loop for a round trip, and for the whole timeout while Redis is
    down. Each command is bounded by *timeout*; connections belong to the loop
    that made them, so a later loop gets a fresh client.
    """

    def __init__(self, url: RedisUrl, timeout: float) -> None:
        try:
            import redis.asyncio  # noqa: F401  (checked here: at start-up, not at shutdown)
        except ImportError:
            raise ConfigError(
                "spool_path: a Redis spool needs the redis package: "
                'pip install "optibase-edge[redis]"'
            ) from None
        self._url = url
        self._timeout = timeout
        self._clients = PerLoop(self._make_client)

    def _make_client(self) -> Redis:
        from redis.asyncio import Redis

        return Redis.from_url(
            self._url.url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
        )

    async def append(self, records: Sequence[bytes]) -> None:
        if records:
            async with asyncio.timeout(self._timeout):
                await self._clients.get().rpush(REDIS_KEY, *records)

    async def take(self, limit: int) -> Taken | None:
        async with asyncio.timeout(self._timeout):
            popped = await self._clients.get().lpop(REDIS_KEY, limit)
        if not isinstance(popped, list) or not popped:  # None: no list (LPOP with a count)
            return None
        # bytes: the client is made without decode_responses.
        lines = [line for line in popped if isinstance(line, bytes)]
        records = [item for line in lines if (item := parse(line)) is not None]
        return Taken(records, len(popped) - len(records))

    async def aclose(self) -> None:
        await self._clients.aclose()

    def __str__(self) -> str:
        return self._url.redacted()

"""Where a batch of Segment messages goes: the transport protocol and its three kinds.

A transport answers every :meth:`Transport.send` with an :class:`Outcome`; what
to do with it (retry, split, give up) is decided by the retry policy, not here.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx2

from .._segment import basic_credentials, batch_body
from .._version import __version__
from .per_loop import PerLoop
from .retry import parse_retry_after

_GZIP_IN_THREAD = 64 * 1024  # bigger bodies are compressed off the event loop


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt to send a batch came to.

    ``status`` is the HTTP status, or 0 for a network error (``error`` says
    which); ``retry_after`` is the seconds a ``Retry-After`` header asked for.
    """

    status: int
    retry_after: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """One ``/v1/batch`` request's worth of Segment messages.

    ``messages`` are compact UTF-8 JSON, one Segment message each, identical on
    every attempt (so Segment's ``messageId`` dedupe sees the same ids);
    ``sent_at`` is this attempt's time.
    """

    messages: Sequence[bytes]
    sent_at: float

    def body(self) -> bytes:
        """The request body: ``{"batch": [...], "sentAt": "..."}``."""
        return batch_body(self.messages, self.sent_at)

    def decoded(self) -> list[dict[str, Any]]:
        """The messages as dicts."""
        return [json.loads(message) for message in self.messages]


class Transport(Protocol):
    """What ``Optibase(transport=...)`` accepts.

    ``send`` may raise: an exception counts as a network error (retried within
    ``retry_max_time``). ``aclose`` is called once, at shutdown.
    """

    async def send(self, batch: Batch) -> Outcome: ...

    async def aclose(self) -> None: ...


class SegmentTransport:
    """``POST {base_url}/v1/batch``, gzip, Basic auth with the write key.

    ``http_transport`` is handed to the ``httpx2.AsyncClient`` (for example an
    ``httpx2.MockTransport`` in tests, or one with a proxy).
    """

    def __init__(
        self,
        write_key: str,
        *,
        base_url: str = "https://api.segment.io",
        timeout: float = 10.0,
        http_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/v1/batch"
        self._headers = {
            "Authorization": f"Basic {basic_credentials(write_key)}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"optibase-edge/{__version__}",
        }
        self._timeout = timeout
        self._http_transport = http_transport
        self._clients = PerLoop(
            lambda: httpx2.AsyncClient(timeout=self._timeout, transport=self._http_transport)
        )

    async def send(self, batch: Batch) -> Outcome:
        raw = batch.body()
        # Compressing ~500 KB takes milliseconds: not on the loop that serves pages.
        body = await asyncio.to_thread(_gzip, raw) if len(raw) > _GZIP_IN_THREAD else _gzip(raw)
        client = self._clients.get()
        try:
            # httpx's timeout is per phase (connect, each read...): a sink trickling
            # bytes could hold a request forever, so the whole exchange is bounded too.
            async with asyncio.timeout(self._timeout):
                response = await client.post(self._url, content=body, headers=self._headers)
        except (httpx2.HTTPError, TimeoutError) as exc:
            return Outcome(0, error=f"{type(exc).__name__}: {exc}")
        return Outcome(response.status_code, parse_retry_after(response.headers.get("retry-after")))

    async def aclose(self) -> None:
        await self._clients.aclose()

    def __repr__(self) -> str:
        return f"SegmentTransport({self._url!r})"  # never the write key


def _gzip(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=6, mtime=0)


class JsonLinesTransport:
    """One Segment message per line, appended to a local file (development mode).

    The file is capped: once it holds ``max_bytes``, it is renamed with a
    ``.1`` suffix (replacing the previous one) and a new file is started, so a
    development server left running never holds more than about twice the cap.
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self._path = Path(path)
        self._max_bytes = max_bytes

    async def send(self, batch: Batch) -> Outcome:
        try:
            if self._size() >= self._max_bytes:
                self._path.replace(self._path.with_name(self._path.name + ".1"))
            with open(self._path, "ab") as file:
                file.write(b"".join(message + b"\n" for message in batch.messages))
        except OSError as exc:
            return Outcome(0, error=str(exc))
        return Outcome(200)

    def _size(self) -> int:
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"JsonLinesTransport({str(self._path)!r})"


Handler = Callable[[Batch], Outcome | Awaitable[Outcome]]


class MockTransport:
    """A transport that calls *handler* with each batch and returns its outcome.

    The handler may be a plain function or a coroutine function; it decides what
    each attempt comes to, so tests can script failures without a network::

        sent = []
        def handler(batch: Batch) -> Outcome:
            sent.extend(batch.decoded())
            return Outcome(200)
        Optibase(..., transport=MockTransport(handler))
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def send(self, batch: Batch) -> Outcome:
        outcome = self._handler(batch)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return outcome

    async def aclose(self) -> None:
        return None

"""A Segment-compatible ``/v1/batch`` endpoint that records what it receives and can
be scripted to misbehave, under real uvicorn on 127.0.0.1.

A request whose Basic auth is not the write key gets a 401, and a body that is
not a JSON batch (gunzipped first when ``Content-Encoding: gzip`` says so) a
400. Every other request is recorded and takes the next action off the script
(``push``), ``"ok"`` when the script is empty:

* ``"ok"``               200 ``{"success": true}``: its messages are accepted
* ``"500"``, ``"503"``…   that status
* ``"429:2"``            429 with ``Retry-After: 2`` (``"429"``: without the header)
* ``"hang"``             hold the request ``hang_seconds`` (past a client's timeout), or until
                         :meth:`SegmentCapture.recover`, then 200
* ``"close"``            start a response, then drop the connection mid-body

Whatever the script says, a batch holding ``BAD_MARKER`` anywhere gets a 400,
like Segment's answer to an invalid event.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.polling import wait_until
from tests.support.server import serve

BAD_MARKER = "__reject_me__"

Messages = list[dict[str, Any]]


@dataclass
class Received:
    """One authenticated request with a readable batch, as the endpoint saw it."""

    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    raw: bytes  # the body as sent (gzipped, when it was)
    body: dict[str, Any]  # the decoded JSON
    body_bytes: int  # the size of the JSON, decompressed
    status: int | None = None  # None: hanging, or closed without a complete answer

    @property
    def events(self) -> int:
        return len(self.body["batch"])

    @property
    def sent_at(self) -> str | None:
        sent_at: str | None = self.body.get("sentAt")
        return sent_at

    @property
    def message_ids(self) -> list[str]:
        return [m.get("messageId") for m in self.body["batch"]]


class SegmentCapture:
    """The endpoint, served while used as a context manager (at :attr:`url`).

    Everything it saw is safe to read from the test's thread: :attr:`requests`
    (every authenticated request with a readable batch, whatever it was
    answered) and :attr:`messages` (those accepted with a 200, repeats included).
    """

    def __init__(self, write_key: str, hang_seconds: float = 5.0) -> None:
        self.bad_auth = 0  # requests refused with a 401
        self.hanging = 0  # requests being held right now
        self._hang_seconds = hang_seconds
        self._authorization = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self._script: deque[str] = deque()
        self._requests: list[Received] = []
        self._messages: Messages = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._recovered = threading.Event()
        self._running = ExitStack()
        self._url: str | None = None

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> SegmentCapture:
        app = Starlette(routes=[Route("/v1/batch", self._batch, methods=["POST"])])
        # "critical": the deliberate mid-response failures of "close" stay out of the log.
        self._url = self._running.enter_context(serve(app, lifespan="off", log_level="critical"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # ends any hang at once, so shutdown never waits one out
        self._running.close()
        self._url = None

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``) to send batches to."""
        if self._url is None:
            raise RuntimeError("the capture is not running: use it in a with statement")
        return self._url

    # -- the script and what was seen --------------------------------------------------

    def push(self, *actions: str) -> None:
        """Queue *actions* for the next requests, in order."""
        with self._lock:
            self._script.extend(actions)

    def recover(self) -> None:
        """Behave from now on: the script is emptied, and hangs (under way or pushed later) end."""
        with self._lock:
            self._script.clear()
        self._recovered.set()

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> Messages:
        with self._lock:
            return list(self._messages)

    def message_ids(self) -> set[str]:
        """The ``messageId`` of every accepted message."""
        return {m["messageId"] for m in self.messages}

    def wait_for(self, ready: Callable[[Messages], bool], what: str) -> Messages:
        """The accepted messages, once *ready* says they are what the test awaits."""

        def check() -> Messages | None:
            messages = self.messages
            return messages if ready(messages) else None

        return wait_until(check, lambda: f"{what}; got {self.messages!r}")

    # -- the endpoint -------------------------------------------------------------------

    async def _batch(self, request: Request) -> Response:
        arrived = time.monotonic()
        if request.headers.get("authorization") != self._authorization:
            with self._lock:
                self.bad_auth += 1
            return JSONResponse({"success": False}, status_code=401)
        raw = await request.body()
        try:
            gzipped = request.headers.get("content-encoding") == "gzip"
            data = gzip.decompress(raw) if gzipped else raw
            body = json.loads(data)
            batch = body["batch"]
            if not isinstance(batch, list):
                raise TypeError("batch is not a list")
        except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError):
            return JSONResponse({"success": False, "error": "bad body"}, status_code=400)
        with self._lock:
            action = self._script.popleft() if self._script else "ok"
            seen = Received(arrived, dict(request.headers), raw, body, len(data))
            self._requests.append(seen)
        if BAD_MARKER.encode() in data:
            return self._answer(seen, 400)
        if action == "hang":
            await self._hang()
            return self._answer(seen, 200)
        if action == "close":
            return _Truncated()
        if action.startswith("429"):
            _, _, retry_after = action.partition(":")
            return self._answer(seen, 429, {"Retry-After": retry_after} if retry_after else None)
        return self._answer(seen, 200 if action == "ok" else int(action))

    async def _hang(self) -> None:
        with self._lock:
            self.hanging += 1
        try:
            until = time.monotonic() + self._hang_seconds
            while (
                time.monotonic() < until
                and not self._stopping.is_set()
                and not self._recovered.is_set()
            ):
                await asyncio.sleep(0.02)
        finally:
            with self._lock:
                self.hanging -= 1

    def _answer(
        self, seen: Received, status: int, headers: dict[str, str] | None = None
    ) -> Response:
        with self._lock:
            seen.status = status
            if status == 200:
                self._messages.extend(seen.body["batch"])
        return JSONResponse({"success": status == 200}, status_code=status, headers=headers)


class _Truncated(Response):
    """Promise a body, send part of it, then fail: uvicorn drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ConnectionAbortedError("capture: closing mid-response on purpose")

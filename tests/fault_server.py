"""A Segment ``/v1/batch`` endpoint with scripted faults, under real uvicorn on 127.0.0.1.

``FaultServer`` runs a small Starlette app in a background thread. Each request
takes the next action from its script (then answers 200 when the script is
empty):

* ``"ok"``              200 ``{"success": true}``
* ``"500"``, ``"503"``…  that status
* ``"429:2"``           429 with ``Retry-After: 2``
* ``"hang"``            hold the request for ``hang_seconds`` (past the client timeout)
* ``"close"``           start a response, then drop the connection mid-body

Whatever the script says, a batch holding ``BAD_MARKER`` anywhere gets a 400,
like Segment's answer to an invalid event. Bodies are gunzipped when sent with
``Content-Encoding: gzip``, and the Basic auth must carry the write key.

``messages`` holds every message the sink accepted (answered 200), repeats
included; ``requests`` logs every request, whatever it was answered.

``ClosingServer`` is the bluntest peer: a raw asyncio TCP server that reads a
request and closes the connection without a byte of answer. ``dead_port()``
gives a port with nothing listening ("down").
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

BAD_MARKER = "__reject_me__"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def bound_socket() -> socket.socket:
    """A listening-ready TCP socket on a free 127.0.0.1 port (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def dead_port() -> int:
    """A port nothing listens on: bound a moment ago, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    """One request as the sink saw it."""

    at: float  # time.monotonic() when it arrived
    action: str
    status: int | None  # None: hung or closed, no complete answer
    events: int
    body_bytes: int  # the decompressed JSON body
    sent_at: str | None
    message_ids: list[str] = field(default_factory=list)
    answered_at: float | None = None


class FaultServer:
    def __init__(self, write_key: str = "k", hang_seconds: float = 5.0) -> None:
        self.write_key = write_key
        self.hang_seconds = hang_seconds
        self.script: deque[str] = deque()
        self.messages: list[dict[str, Any]] = []
        self.requests: list[Received] = []
        self.bad_auth = 0
        self.hanging = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sock = bound_socket()
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/batch", self._batch, methods=["POST"])])
        # log_config=None: leave the test process's logging alone; "critical" keeps
        # the deliberate mid-response failures of "close" out of the output.
        config = uvicorn.Config(
            app, log_config=None, log_level="critical", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FaultServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fault server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT)
        self._sock.close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what it saw ------------------------------------------------------------------

    def push(self, *actions: str) -> None:
        with self._lock:
            self.script.extend(actions)

    def message_ids(self) -> set[str]:
        with self._lock:
            return {m["messageId"] for m in self.messages}

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    # -- the endpoint -----------------------------------------------------------------

    async def _batch(self, request: Request) -> Response:
        arrived = time.monotonic()
        with self._lock:
            action = self.script.popleft() if self.script else "ok"
        if request.headers.get("authorization") != _basic(self.write_key):
            with self._lock:
                self.bad_auth += 1
            return JSONResponse({"success": False}, status_code=401)
        raw = await request.body()
        try:
            if request.headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw)
            batch = body["batch"]
        except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError):
            return JSONResponse({"success": False, "error": "bad body"}, status_code=400)
        seen = Received(
            at=arrived,
            action=action,
            status=None,
            events=len(batch),
            body_bytes=len(raw),
            sent_at=body.get("sentAt"),
            message_ids=[m.get("messageId") for m in batch],
        )
        with self._lock:
            self.requests.append(seen)
        if BAD_MARKER.encode() in raw:
            return self._answer(seen, 400)
        if action == "hang":
            with self._lock:
                self.hanging += 1
            try:
                # In small steps, so a stopping server never waits out a long hang.
                until = time.monotonic() + self.hang_seconds
                while time.monotonic() < until and not self._stopping.is_set():
                    await asyncio.sleep(0.02)
            finally:
                with self._lock:
                    self.hanging -= 1
            return self._answer(seen, 200, batch)
        if action == "close":
            return _Truncated()
        if action.startswith("429"):
            _, _, retry_after = action.partition(":")
            headers = {"Retry-After": retry_after} if retry_after else {}
            return self._answer(seen, 429, headers=headers)
        if action != "ok":
            return self._answer(seen, int(action))
        return self._answer(seen, 200, batch)

    def _answer(
        self,
        seen: Received,
        status: int,
        batch: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        with self._lock:
            seen.status = status
            seen.answered_at = time.monotonic()
            if status == 200 and batch is not None:
                self.messages.extend(batch)
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
        raise ConnectionAbortedError("fault server: closing mid-response on purpose")


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


class ClosingServer:
    """Reads each request's head, then closes the connection without answering."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = bound_socket()
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                async with asyncio.timeout(5):
                    await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                pass
            writer.close()

        async def open_server() -> None:
            self._server = await asyncio.start_server(handle, sock=self._sock)
            self._ready.set()

        self._loop.run_until_complete(open_server())
        self._loop.run_forever()
        self._loop.close()

    def __enter__(self) -> ClosingServer:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            raise RuntimeError("the closing server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        def shut() -> None:
            if self._server is not None:
                self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shut)
        self._thread.join(STOP_TIMEOUT)

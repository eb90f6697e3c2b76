"""A Segment-compatible ``/v1/batch`` endpoint that records exactly what it receives."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


@dataclass
class Capture:
    """What the endpoint saw; safe to read from the test thread."""

    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for r in self.requests for m in r.body["batch"]]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; got {messages!r}")
            time.sleep(0.02)

    def app(self) -> Starlette:
        async def batch(request: Request) -> JSONResponse:
            raw = await request.body()
            gzipped = request.headers.get("content-encoding") == "gzip"
            data = gzip.decompress(raw) if gzipped else raw
            received = Received(dict(request.headers), raw, json.loads(data))
            with self._lock:
                self.requests.append(received)
            return JSONResponse({"success": True})

        return Starlette(routes=[Route("/v1/batch", batch, methods=["POST"])])

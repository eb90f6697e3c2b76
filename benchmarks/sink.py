"""Loopback Segment stand-ins, run in their own process.

``python -m benchmarks.sink --port P --mode count``: a small Starlette/uvicorn
app; ``POST /v1/batch`` (gzip or not) answers ``{"success": true}`` and counts
the messages per sender (by User-Agent: ``optibase-edge`` or
``analytics-python``); ``GET /count`` returns the counters, ``POST /reset``
zeroes them.

``--mode hang``: accepts TCP connections, reads whatever arrives, never
answers (a Segment endpoint that hangs).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

LOOPBACK = "127.0.0.1"


def counting_app() -> Starlette:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    messages: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    body_bytes: Counter[str] = Counter()

    def sender(request: Request) -> str:
        agent = request.headers.get("user-agent", "")
        for name in ("optibase-edge", "analytics-python"):
            if agent.startswith(name):
                return name
        return "other"

    async def batch(request: Request) -> JSONResponse:
        raw = await request.body()
        who = sender(request)
        body = gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw
        payload = json.loads(body)
        messages[who] += len(payload.get("batch", ()))
        requests[who] += 1
        body_bytes[who] += len(raw)
        return JSONResponse({"success": True})

    async def count(request: Request) -> JSONResponse:
        return JSONResponse(
            {"messages": dict(messages), "requests": dict(requests), "bytes": dict(body_bytes)}
        )

    async def reset(request: Request) -> JSONResponse:
        messages.clear()
        requests.clear()
        body_bytes.clear()
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/v1/batch", batch, methods=["POST"]),
            Route("/count", count),
            Route("/reset", reset, methods=["POST"]),
        ]
    )


async def hang_forever(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass  # swallow the request, never answer
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("count", "hang"), default="count")
    args = parser.parse_args()
    if args.mode == "hang":
        asyncio.run(hang_forever(args.port))
        return
    import uvicorn

    uvicorn.run(
        counting_app(), host=LOOPBACK, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()

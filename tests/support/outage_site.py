"""The site of the Redis outage test, under ``uvicorn --workers 4``: ``outage_site:app``.

Built at import from the environment, so that each worker process builds its
own. The site's claims go to one Redis, shared by the workers:

* ``OUTAGE_REDIS_URL``: the dedupe store's Redis;
* ``OUTAGE_SEGMENT_ENDPOINT`` and ``OUTAGE_WRITE_KEY``: where the Segment calls go (a capture);
* ``OUTAGE_ON_STORE_ERROR``: the policy, ``send`` or ``hold``;
* ``OUTAGE_STATS_DIR``: where each worker writes its ``ob.stats()``, as
  ``<pid>.json``, once its lifespan shutdown has flushed delivery.

``/pid`` answers the worker's process ID. The pages answer the visitor's ID and
the process's, as HTML (a page, which gets the visitor's cookie). ``/``
assigns the ``hero`` test (a first visit also identifies the visitor);
``/pricing`` is a one-per-visitor PAGE_VIEW conversion, which the cookie does
not record: every worker that serves it to a visitor for the first time emits
it, and only the shared store keeps it to one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    RedisStore,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._settings import OnStoreError

ob = Optibase(
    tests=[Test("hero", [Variant("control"), Variant("bold")], pages=["/"])],
    conversions=[
        Conversion("pricing", ConversionType.PAGE_VIEW, url="/pricing", one_per_visitor=True)
    ],
    secret_keys=["outage-test-secret-key-0123456789abcdef"],
    segment_write_key=os.environ["OUTAGE_WRITE_KEY"],
    segment_endpoint=os.environ["OUTAGE_SEGMENT_ENDPOINT"],
    # A short timeout: a claim is never slower than this, dead server or not.
    dedupe_store=RedisStore(os.environ["OUTAGE_REDIS_URL"], socket_timeout=0.5),
    on_store_error=cast(OnStoreError, os.environ["OUTAGE_ON_STORE_ERROR"]),
    flush_interval=0.05,
    shutdown_timeout=10.0,
)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(f"{get_visitor(request).id} {os.getpid()}")


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


class _StatsAtShutdown:
    """Writes the worker's delivery counters once the lifespan shutdown is complete."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_after_flush(message: Message) -> None:
            # The middleware has flushed and closed delivery by the time "complete" reaches here.
            if message["type"] == "lifespan.shutdown.complete":
                path = Path(os.environ["OUTAGE_STATS_DIR"]) / f"{os.getpid()}.json"
                path.write_text(json.dumps(ob.stats()))
            await send(message)

        await self.app(scope, receive, send_after_flush)


app = _StatsAtShutdown(
    Starlette(
        routes=[Route("/", page), Route("/pricing", page), Route("/pid", pid)],
        middleware=[Middleware(OptibaseMiddleware, optibase=ob)],
    )
)

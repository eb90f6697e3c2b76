"""The site the servers' end-to-end tests run: ``tests.support.e2e_site:app``.

Built at import from the environment, so that any ASGI server can load it by
name in its own process. Optibase reads ``OPTIBASE_SECRET_KEYS`` and
``OPTIBASE_SEGMENT_WRITE_KEY`` itself; the site adds

* ``E2E_SEGMENT_ENDPOINT``: the base URL the Segment calls go to (a capture);
* ``E2E_STATIC_DIR``: the directory ``/files/{name}`` serves with ``FileResponse``;
* ``E2E_FLUSH_INTERVAL``: seconds a batch waits to fill; a long one leaves
  events queued until something flushes them (a shutdown);
* ``E2E_SPOOL_PATH`` and ``E2E_MAX_BUFFER_EVENTS``: the spool, and the
  buffer's bound (small, to make a flood overflow to the spool).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    Test,
    Variant,
    get_visitor,
)

STATIC_DIR = Path(os.environ["E2E_STATIC_DIR"])

ob = Optibase(
    tests=[
        # Assigned with no code on the home page and on the files served from disk.
        Test("hero", [Variant("control"), Variant("bold")], pages=["/", "/files/*"]),
        # Assigned only where a view asks for it.
        Test("offer", [Variant("ten"), Variant("twenty")]),
    ],
    conversions=[
        # A CLICK conversion is what makes the middleware inject the client script.
        Conversion("signup", ConversionType.CLICK, selector="#signup"),
        Conversion("pricing", ConversionType.PAGE_VIEW, url="/pricing"),
        Conversion("purchase", ConversionType.PROGRAMMATIC),
    ],
    segment_endpoint=os.environ["E2E_SEGMENT_ENDPOINT"],
    flush_interval=float(os.environ.get("E2E_FLUSH_INTERVAL", "0.05")),
    spool_path=os.environ.get("E2E_SPOOL_PATH") or None,
    max_buffer_events=int(os.environ.get("E2E_MAX_BUFFER_EVENTS", "10000")),
)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
    )


async def home(request: Request) -> HTMLResponse:
    visitor = get_visitor(request)
    hero = visitor.variant("hero")
    return _page(
        "Home",
        f'<h1 data-visitor="{visitor.id}" data-variant="{hero}">Welcome</h1>'
        '<button id="signup">Sign up</button>',
    )


async def pricing(request: Request) -> HTMLResponse:
    return _page("Pricing", "<h1>Pricing</h1>")


async def buy(request: Request) -> JSONResponse:
    visitor = get_visitor(request)
    offer = visitor.variant("offer")
    await visitor.convert("purchase")
    return JSONResponse({"visitor": visitor.id, "offer": offer})


async def file(request: Request) -> Response:
    path = STATIC_DIR / request.path_params["name"]
    if not path.is_file():
        return JSONResponse({"error": "no such file"}, status_code=404)
    return FileResponse(path, media_type="text/html")


async def server(request: Request) -> JSONResponse:
    """What the server promises in the scope: the ASGI extensions it advertises."""
    extensions = request.scope.get("extensions") or {}
    return JSONResponse({"extensions": sorted(extensions)})


async def flush(request: Request) -> JSONResponse:
    return JSONResponse({"flushed": await ob.flush(timeout=5)})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(ob.stats())


app = Starlette(
    routes=[
        Route("/", home),
        Route("/pricing", pricing),
        Route("/buy", buy, methods=["POST"]),
        Route("/files/{name}", file),
        Route("/server", server),
        Route("/flush", flush),
        Route("/stats", stats),
    ],
    middleware=[Middleware(OptibaseMiddleware, optibase=ob)],
)

"""The edge benchmark's two apps: a site serving a 100 KB page, and the edge in front of it.

uvicorn ``--factory`` targets, configured by ``BENCH_*`` environment variables.
The page is the demo's Webflow-like page (:func:`demo_site.webflow_page.webflow_page`):
two variant blocks of each of its two tests.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from demo_site.webflow_page import BLOCK_TESTS, webflow_page
from optibase_edge import Optibase, OptibaseMiddleware, ReverseProxy, Test, Variant

from .apps import SECRET

PAGE = webflow_page().encode()


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


def create_upstream_app() -> Starlette:
    return Starlette(routes=[Route("/", page)])


def edge_tests() -> list[Test]:
    return [Test(id=t, variants=[Variant(v) for v in vs]) for t, vs in BLOCK_TESTS.items()]


def create_edge_app() -> OptibaseMiddleware:
    optibase = Optibase(
        tests=edge_tests(),
        secret_keys=[SECRET],
        events_path=os.environ["BENCH_EVENTS_PATH"],
    )
    return OptibaseMiddleware(ReverseProxy(os.environ["BENCH_UPSTREAM"]), optibase=optibase)

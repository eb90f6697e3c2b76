"""Edge mode in the demo: a landing page built elsewhere, served through the edge.

:func:`create_landing_origin` is the page's own server: the Webflow-like page
of :mod:`demo_site.webflow_page` with its variant blocks, and a plain signup
page, from a site that knows nothing of this library. :func:`create_edge_app`
is what ``optibase-edge proxy`` runs: the middleware in front of a
:class:`ReverseProxy` to that origin, with the demo's tests and conversions, so
the page's blocks are resolved before it leaves and its events reach the same
sink as the Paperplane site's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from demo_site.experiment import LANDING_TESTS, TESTS, build_optibase
from demo_site.webflow_page import webflow_page
from optibase_edge import OptibaseMiddleware, ReverseProxy

SITE_TESTS = tuple(test for test in TESTS if test not in LANDING_TESTS)

SIGNED_UP = (
    "<!doctype html><html><head><meta charset=utf-8><title>Welcome aboard</title></head>"
    "<body><h1>Welcome aboard</h1><p>Your trial has started.</p><p><a href='/'>Back</a></p>"
    "</body></html>"
)


async def _landing(request: Request) -> HTMLResponse:
    return HTMLResponse(webflow_page())


async def _signed_up(request: Request) -> HTMLResponse:
    return HTMLResponse(SIGNED_UP)


def create_landing_origin() -> Starlette:
    """The landing page's origin, as its site builder would serve it."""
    return Starlette(routes=[Route("/", _landing), Route("/signup", _signed_up)])


def create_edge_app(
    origin_url: str, *, segment_endpoint: str, write_key: str, secret_keys: Sequence[str]
) -> OptibaseMiddleware:
    """The edge in front of *origin_url*, reporting to the demo's sink."""
    optibase = build_optibase(
        segment_endpoint=segment_endpoint,
        write_key=write_key,
        secret_keys=secret_keys,
        # The site's tests are known here, so that a visitor's cookie (one host name,
        # two ports) keeps them, but not assigned: their pages are the site's.
        tests=(*(replace(test, pages=()) for test in SITE_TESTS), *LANDING_TESTS),
    )
    return OptibaseMiddleware(ReverseProxy(origin_url), optibase=optibase)

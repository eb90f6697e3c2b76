"""The site under test, its Optibase configuration, and the two peer middlewares.

* :func:`make_site` -- a small Starlette site: ``/`` renders a ~2 KB page.
* :func:`bench_optibase` -- 5 running tests, 3 of them on ``/``; 3 conversions.
* :class:`NoopMiddleware` -- a ``BaseHTTPMiddleware`` that does nothing.
* :class:`GrowthBookMiddleware` -- the same job done with the GrowthBook Python SDK,
  written the way the SDK documents server-side use: an anonymous id in a cookie,
  one ``GrowthBook`` instance per request with ``attributes={"id": ...}``, and an
  ``on_experiment_viewed`` callback that hands exposures to an analytics queue.

The ``create_*`` functions are uvicorn ``--factory`` targets; they read their
settings from ``BENCH_*`` environment variables set by the benchmark runner.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections import deque
from typing import Any

from growthbook import Experiment, GrowthBook
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    Test,
    Variant,
)

SECRET = "bench-secret-key-0123456789abcdef"
WRITE_KEY = "bench-write-key"

PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>Shop</title>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<link rel=stylesheet href=/static/site.css></head><body>"
    "<header><nav><a href=/>Home</a> <a href=/pricing>Pricing</a> <a href=/blog>Blog</a>"
    "</nav></header><main><h1>Build faster</h1>"
    + "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua.</p>"
    * 12
    + "<button id=signup>Sign up</button></main><footer>&copy; Shop</footer></body></html>"
)

# The three tests whose ``pages`` match "/", plus two elsewhere on the site.
PAGE_TESTS = [
    ("hero", ["control", "bold"], None),
    ("cta_color", ["blue", "green", "orange"], [2, 1, 1]),
    ("social_proof", ["none", "logos"], None),
]
OTHER_TESTS = [
    ("pricing_table", ["monthly", "annual"], "/pricing"),
    ("checkout_steps", ["three", "one"], "/checkout/*"),
]


def bench_tests() -> list[Test]:
    tests = []
    for name, variants, weights in PAGE_TESTS:
        vs = [
            Variant(v, weight=w)
            for v, w in zip(variants, weights or [1] * len(variants), strict=True)
        ]
        tests.append(Test(id=name, variants=vs, pages=["/", "/landing/*"]))
    for name, variants, page in OTHER_TESTS:
        tests.append(Test(id=name, variants=[Variant(v) for v in variants], pages=[page]))
    return tests


def bench_conversions() -> list[Conversion]:
    return [
        Conversion(
            id="signup", type=ConversionType.CLICK, selector="#signup", one_per_visitor=True
        ),
        Conversion(id="pricing", type=ConversionType.PAGE_VIEW, url="/pricing"),
        Conversion(id="purchase", type=ConversionType.PROGRAMMATIC),
    ]


def bench_optibase(**overrides: Any) -> Optibase:
    settings: dict[str, Any] = {
        "tests": bench_tests(),
        "conversions": bench_conversions(),
        "secret_keys": [SECRET],
    }
    settings.update(overrides)
    return Optibase(**settings)


# --------------------------------------------------------------------------- the site


async def homepage(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def buy(request: Request) -> Response:
    visitor = request.scope.get("optibase.visitor")
    if visitor is not None:
        await visitor.convert("purchase")
    return HTMLResponse("<p>thanks</p>")


async def bench_stats(request: Request) -> Response:
    ob = request.app.state.optibase if hasattr(request.app.state, "optibase") else None
    return JSONResponse(ob.stats() if ob is not None else {})


def make_site() -> Starlette:
    return Starlette(
        routes=[
            Route("/", homepage),
            Route("/buy", buy),
            Route("/_bench/stats", bench_stats),
        ]
    )


def wrapped_site(ob: Optibase) -> Starlette:
    app = make_site()
    app.state.optibase = ob
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app


class NoopMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


class NoopAsgiMiddleware:
    """The floor for a response-touching pure-ASGI middleware: a send wrapper, no work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, send_wrapper)


def noop_asgi_site() -> Starlette:
    app = make_site()
    app.add_middleware(NoopAsgiMiddleware)
    return app


def noop_site() -> Starlette:
    app = make_site()
    app.add_middleware(NoopMiddleware)
    return app


# --------------------------------------------------------------------------- GrowthBook peer


def _read_cookie(headers: list[tuple[bytes, bytes]], prefix: bytes) -> str | None:
    for key, value in headers:
        if key == b"cookie":
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    return part[len(prefix) :].decode("latin-1")
    return None


class GrowthBookMiddleware:
    """Pure-ASGI peer: the same assignment of 3 experiments on "/", done with GrowthBook.

    The visitor id lives in an (unsigned, like GrowthBook's own ``gbuuid``
    recipe) cookie; each request gets its own ``GrowthBook`` instance, as the
    SDK's docs recommend for servers (one shared instance would mix users and
    grow its tracking dedupe map without bound). Exposures go to
    ``on_experiment_viewed``, which appends to a bounded in-memory queue: the
    cheapest honest stand-in for handing them to an analytics client.
    """

    COOKIE = "gbuuid"

    def __init__(self, app: ASGIApp, experiments: list[Experiment[str]], pages: set[str]) -> None:
        self.app = app
        self.experiments = experiments
        self.pages = pages
        self.exposures: deque[tuple[str, str, int]] = deque(maxlen=100_000)
        self._prefix = (self.COOKIE + "=").encode()
        self._max_age = 400 * 24 * 3600

    def _on_viewed(self, *, experiment: Any, result: Any, user_context: Any) -> None:
        self.exposures.append((result.hashValue, experiment.key, result.variationId))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        visitor_id = _read_cookie(scope["headers"], self._prefix)
        is_new = visitor_id is None
        if visitor_id is None:
            visitor_id = str(uuid.uuid4())
        gb = GrowthBook(attributes={"id": visitor_id}, on_experiment_viewed=self._on_viewed)
        variants: dict[str, str] = {}
        if scope["method"] == "GET" and scope["path"] in self.pages:
            for experiment in self.experiments:
                result = gb.run(experiment)
                if result.inExperiment:
                    variants[experiment.key] = result.value
        scope["growthbook"] = gb
        scope["growthbook.variants"] = variants
        if not is_new:
            await self.app(scope, receive, send)
            return
        header = (
            b"set-cookie",
            f"{self.COOKIE}={visitor_id}; Max-Age={self._max_age}; Path=/; HttpOnly; "
            "SameSite=Lax".encode("latin-1"),
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def growthbook_experiments() -> list[Experiment[str]]:
    return [
        Experiment(key=name, variations=list(variants), weights=_normalise(weights))
        for name, variants, weights in PAGE_TESTS
    ]


def _normalise(weights: list[int] | None) -> list[float] | None:
    if weights is None:
        return None
    total = sum(weights)
    return [w / total for w in weights]


def growthbook_site() -> tuple[Starlette, GrowthBookMiddleware]:
    app = make_site()
    app.add_middleware(
        GrowthBookMiddleware, experiments=growthbook_experiments(), pages={"/", "/landing"}
    )
    app.middleware_stack = app.build_middleware_stack()
    return app, _find(app, GrowthBookMiddleware)


def _find(app: Starlette, cls: type) -> Any:
    node: Any = app.middleware_stack
    while node is not None:
        if isinstance(node, cls):
            return node
        node = getattr(node, "app", None)
    raise LookupError(cls.__name__)


# --------------------------------------------------------------------------- uvicorn factories


def create_bare_app() -> Starlette:
    return make_site()


def create_wrapped_app() -> Starlette:
    """The site behind OptibaseMiddleware, configured from ``BENCH_*`` variables.

    ``BENCH_SEGMENT_ENDPOINT`` set: events go to that Segment-compatible sink
    (write key and secret key set, as in production). Unset: events go to a
    JSONL file (``BENCH_EVENTS_PATH``, default a temp file).
    """
    endpoint = os.environ.get("BENCH_SEGMENT_ENDPOINT")
    overrides: dict[str, Any] = {}
    if endpoint:
        overrides.update(segment_endpoint=endpoint, segment_write_key=WRITE_KEY)
    else:
        path = os.environ.get("BENCH_EVENTS_PATH") or os.path.join(
            tempfile.gettempdir(), f"optibase-bench-{os.getpid()}.jsonl"
        )
        overrides.update(events_path=path)
    extra = os.environ.get("BENCH_OPTIBASE_SETTINGS")
    if extra:
        overrides.update(json.loads(extra))
    return wrapped_site(bench_optibase(**overrides))


def create_noop_asgi_app() -> Starlette:
    """The site behind a do-nothing pure-ASGI middleware (the floor, over HTTP)."""
    return noop_asgi_site()

"""A shared cache in front of the site never gives one visitor's page to another.

The site, under uvicorn: ``/`` renders the visitor's variant of ``hero`` and
answers with the caching headers of a case (as the app would without the
middleware: mostly public) and an ``ETag``; ``/about`` is HTML in no test, and
public; ``/styles.css`` is public and not HTML. A CLICK conversion exists, so
the middleware injects its per-visitor script tag into every HTML page. In
front of it runs tests/support/cdn.py's ``SharedCache``, keyed by URL alone
and replaying ``Set-Cookie``: whatever the middleware leaves storable by a
shared cache, it shares between visitors.

Forty visitors, each with a cookie jar of its own and a desktop Chrome's
User-Agent, ask for ``/`` once each, then all once more. Each must keep the
one visitor ID it was given, no two may share one, and every page must be its
holder's: the tag's visitor and variants, the rendered variant, the cookie's
assignment and the Experiment Viewed event all agree. With
``cache_control=None`` the middleware leaves the headers alone, and the same
run shows the cache handing the first visitor's page and cookie to everyone:
the check can fail.
"""

from __future__ import annotations

import html
import json
import re
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from optibase_edge import (
    Batch,
    Conversion,
    ConversionType,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._cookie import CookieCodec, VisitorRecord
from tests.support.cdn import TARGETED_FIELDS, SharedCache, directives
from tests.support.polling import wait_until
from tests.support.server import serve
from tests.support.user_agents import AS_A_BROWSER

SECRET = "x" * 32
COOKIE = "optibase_vid"
VISITORS = 40
PUBLIC = {"cache-control": "public, max-age=3600"}
ETAG = '"site-v1"'
HOME = (
    "<!doctype html><html><head><title>Home</title></head><body>"
    '<h1 data-variant="{variant}">Welcome</h1><button id="signup">Sign up</button>'
    "</body></html>"
)
ABOUT = "<!doctype html><html><head><title>About</title></head><body>About us</body></html>"

CacheSetting = Literal["private"] | None


@dataclass(frozen=True)
class Case:
    """The caching headers the app gives ``/``."""

    id: str
    headers: dict[str, str]
    shared: bool  # as sent, a shared cache stores it
    kept: bool  # Cache-Control already keeps it out of shared caches: left as it is


CASES = [
    Case("public", PUBLIC, shared=True, kept=False),
    Case(
        "s-maxage",
        {"cache-control": "public, max-age=60, s-maxage=3600"},
        shared=True,
        kept=False,
    ),
    Case("no-cache-control", {}, shared=True, kept=False),
    *(
        Case(field, {**PUBLIC, field: "max-age=600"}, shared=True, kept=False)
        for field in TARGETED_FIELDS
    ),
    Case("no-store", {"cache-control": "no-store"}, shared=False, kept=True),
    Case("private", {"cache-control": "private, max-age=60"}, shared=False, kept=True),
    Case(
        "private-with-cdn-cache-control",
        {"cache-control": "private, max-age=60", "cdn-cache-control": "max-age=600"},
        shared=True,
        kept=True,
    ),
]


# -- the site and the cache in front of it --------------------------------------------------


class Viewed:
    """The Experiment Viewed events delivery hands the transport, by visitor ID."""

    def __init__(self) -> None:
        self._variants: dict[str, list[str]] = {}
        self._lock = threading.Lock()  # written in uvicorn's thread, read in the test's

    def record(self, batch: Batch) -> Outcome:
        with self._lock:
            for message in batch.decoded():
                if message.get("event") == "Experiment Viewed":
                    variants = self._variants.setdefault(message["anonymousId"], [])
                    variants.append(message["properties"]["variant_id"])
        return Outcome(200)

    def by_visitor(self) -> dict[str, list[str]]:
        with self._lock:
            return {visitor: list(variants) for visitor, variants in self._variants.items()}


def site(home_headers: dict[str, str], cache_control: CacheSetting, viewed: Viewed) -> Starlette:
    ob = Optibase(
        tests=[Test("hero", [Variant("control"), Variant("bold")], pages=["/"])],
        conversions=[Conversion("signup", ConversionType.CLICK, selector="#signup")],
        secret_keys=[SECRET],
        transport=MockTransport(viewed.record),
        flush_interval=0.05,
        cache_control=cache_control,
    )

    async def home(request: Request) -> Response:
        variant = get_visitor(request).variant("hero")
        headers = {**home_headers, "etag": ETAG}
        return HTMLResponse(HOME.format(variant=variant), headers=headers)

    async def about(request: Request) -> Response:
        return HTMLResponse(ABOUT, headers={**PUBLIC, "etag": ETAG})

    async def styles(request: Request) -> Response:
        return Response("h1 { color: teal }", media_type="text/css", headers=PUBLIC)

    app = Starlette(routes=[Route("/", home), Route("/about", about), Route("/styles.css", styles)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app


@contextmanager
def behind_a_cdn(
    home_headers: dict[str, str], cache_control: CacheSetting = "private"
) -> Iterator[tuple[str, Viewed]]:
    """The site served with a :class:`SharedCache` in front: (the cache's URL, the events)."""
    viewed = Viewed()
    with (
        serve(site(home_headers, cache_control, viewed)) as origin,
        serve(SharedCache(origin)) as url,
    ):
        yield url, viewed


# -- visitors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """One page as a visitor received it, and the cookie the visitor held afterwards."""

    visitor: int
    response: httpx2.Response
    cookie: VisitorRecord | None

    @property
    def holder(self) -> str | None:
        """The visitor ID of the cookie the visitor now holds."""
        return self.cookie.visitor_id if self.cookie else None

    @property
    def tag_visitor(self) -> str | None:
        found = re.search(r'data-optibase-visitor="([^"]*)"', self.response.text)
        return html.unescape(found.group(1)) if found else None

    @property
    def tag_variants(self) -> dict[str, str]:
        found = re.search(r'data-optibase-variants="([^"]*)"', self.response.text)
        pairs: list[dict[str, str]] = json.loads(html.unescape(found.group(1))) if found else []
        return {pair["test_id"]: pair["variant_id"] for pair in pairs}

    @property
    def shown(self) -> str | None:
        """The variant the page rendered."""
        found = re.search(r'<h1 data-variant="([^"]*)"', self.response.text)
        return found.group(1) if found else None


@contextmanager
def browsers(url: str, count: int) -> Iterator[list[httpx2.Client]]:
    """*count* visitors: clients with a cookie jar each and a browser's User-Agent."""
    # Plain HTTP, but each client would build (and load certificates into) a TLS
    # context of its own: one for all takes a second off every forty visitors.
    tls = ssl.create_default_context()
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                httpx2.Client(base_url=url, headers=AS_A_BROWSER, verify=tls, trust_env=False)
            )
            for _ in range(count)
        ]


def visit(visitor: int, client: httpx2.Client, path: str) -> Visit:
    response = client.get(path)
    assert response.status_code == 200, response.text
    token = client.cookies.get(COOKIE)
    return Visit(visitor, response, CookieCodec([SECRET]).decode(token) if token else None)


def two_rounds(url: str, path: str = "/") -> list[Visit]:
    """Every visitor asks for *path*, then every visitor again; in visitor order per round.

    The first visitor asks alone, so whatever the cache keeps of its answer, every
    other visitor meets; after that, the visitors of a round ask all at once.
    """
    with browsers(url, VISITORS) as clients, ThreadPoolExecutor(VISITORS) as pool:

        def rest(visitors: range) -> list[Visit]:
            return list(pool.map(lambda i: visit(i, clients[i], path), visitors))

        return [visit(0, clients[0], path), *rest(range(1, VISITORS)), *rest(range(VISITORS))]


# -- what must hold -------------------------------------------------------------------------


def assert_each_visitor_sees_only_their_own(visits: list[Visit], viewed: Viewed) -> None:
    """Each visitor was given an ID of its own with its first page, and kept it.

    Every page it got names that ID in the tag, and renders the variant the tag,
    the cookie and the one Experiment Viewed recorded for that ID all say.
    """
    first = {v.visitor: v.holder for v in visits[:VISITORS]}
    assert None not in first.values(), "a visitor was given no cookie"
    assert len(set(first.values())) == VISITORS, "two visitors were given one visitor's cookie"
    for v in visits:
        assert v.holder == first[v.visitor], f"visitor {v.visitor}'s cookie changed hands"
        assert v.cookie is not None  # for the type checker: holder is not None
        assert v.tag_visitor == v.holder, f"visitor {v.visitor} got {v.tag_visitor}'s page"
        assert v.shown == v.tag_variants.get("hero") == v.cookie.assignments.get("hero")
    shown = {v.holder: v.shown for v in visits[:VISITORS]}
    assert set(shown.values()) == {"control", "bold"}  # so a page shown to the wrong one shows

    def every_visitor_recorded() -> dict[str, list[str]] | None:
        events = viewed.by_visitor()
        return events if len(events) >= VISITORS else None

    recorded = wait_until(
        every_visitor_recorded,
        lambda: f"{VISITORS} visitors' Experiment Viewed; got {viewed.by_visitor()}",
    )
    assert recorded == {visitor: [variant] for visitor, variant in shown.items()}


def assert_kept_out_of_shared_caches(visit: Visit, app_cache_control: str | None) -> None:
    """The per-visitor response, as no shared cache may keep it.

    ``Cache-Control`` private, or exactly *app_cache_control* when the app's own
    already kept it out of shared caches; no CDN-targeted field; no ``ETag``.
    """
    headers = visit.response.headers
    cache_control = headers.get("cache-control")
    assert headers["x-cache"] == "MISS", f"visitor {visit.visitor} was answered from the cache"
    if app_cache_control is not None:
        assert cache_control == app_cache_control
    else:
        found = directives(cache_control or "")
        assert "private" in found, f"Cache-Control: {cache_control!r}"
        assert not {"public", "s-maxage"} & found.keys(), f"Cache-Control: {cache_control!r}"
    for field in TARGETED_FIELDS:
        assert field not in headers, f"{field}: {headers[field]!r} is left for a CDN"
    assert "etag" not in headers, "the injected body is not the one the app's ETag names"
    assert "cookie" not in headers.get("vary", "").lower()  # would defeat every cache


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_no_visitor_is_served_another_visitors_page_or_cookie(case: Case) -> None:
    with behind_a_cdn(case.headers) as (url, viewed):
        visits = two_rounds(url)
        assert_each_visitor_sees_only_their_own(visits, viewed)
    for v in visits:
        assert_kept_out_of_shared_caches(v, case.headers["cache-control"] if case.kept else None)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_with_cache_control_none_the_apps_headers_pass_and_the_cache_leaks(case: Case) -> None:
    """The same run with the safeguard off: the check above can fail.

    Wherever the app's headers let a shared cache store the page, the first
    visitor's page and cookie reach every other visitor.
    """
    with behind_a_cdn(case.headers, cache_control=None) as (url, viewed):
        visits = two_rounds(url)
        if not case.shared:
            assert_each_visitor_sees_only_their_own(visits, viewed)
    for v in visits:
        assert v.response.headers.get("etag") == ETAG
        for name, value in case.headers.items():
            assert v.response.headers.get(name) == value
    if case.shared:
        # The leak: the first visitor's page and cookie, served to everyone from the cache.
        first = visits[0]
        assert first.response.headers["x-cache"] == "MISS"
        assert [v.response.headers["x-cache"] for v in visits[1:]] == ["HIT"] * (len(visits) - 1)
        assert {v.holder for v in visits} == {first.holder}
        assert {v.tag_visitor for v in visits} == {first.holder}


def test_every_html_page_carries_the_visitor_so_is_private_and_other_files_stay_public() -> None:
    with behind_a_cdn(PUBLIC) as (url, _), browsers(url, 2) as clients:
        for i, client in enumerate(clients):
            visit(i, client, "/")  # now a returning visitor, with a cookie
        for i, client in enumerate(clients):
            for _ in range(2):
                about = visit(i, client, "/about")
                # Nothing was assigned and no cookie set, but the tag names the visitor.
                assert "set-cookie" not in about.response.headers
                assert about.tag_visitor == about.holder
                assert_kept_out_of_shared_caches(about, None)
        styles = [visit(i, client, "/styles.css") for i, client in enumerate(clients)]
    # Nothing about the visitor went into the stylesheet: it stays shareable.
    assert [s.response.headers["cache-control"] for s in styles] == [PUBLIC["cache-control"]] * 2
    assert [s.response.headers["x-cache"] for s in styles] == ["MISS", "HIT"]
    assert all("set-cookie" not in s.response.headers for s in styles)

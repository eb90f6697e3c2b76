"""The shared cache of tests/support/cdn.py, over real HTTP: it caches what a CDN would.

Both the cache and its upstream run under uvicorn, once for the module; each
test has a path of its own (``page``), so nothing one test stored is seen by
another. The upstream answers a path with the headers a test gave it for that
path and a JSON body saying which call this is and what request headers
arrived: a HIT shows as an old call number, and the upstream's count shows how
often the cache went through. The cache's clock is the test's: time moves only
when a test moves it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.cdn import SharedCache
from tests.support.server import serve

PUBLIC = {"cache-control": "public, max-age=60"}
HEURISTIC_TTL = 5


class Clock:
    """A clock that stands still until :meth:`advance` moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Upstream:
    """The site behind the cache: per path, a status and headers; counts calls per target."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, str]]] = {}
        self.calls: Counter[str] = Counter()  # by path and query
        route = Route("/{rest:path}", self._answer, methods=["GET", "POST"])
        self.app = Starlette(routes=[route])

    def answer(self, path: str, headers: dict[str, str], status: int = 200) -> None:
        self.answers[path] = (status, headers)

    async def _answer(self, request: Request) -> JSONResponse:
        query = request.url.query
        target = request.url.path + (f"?{query}" if query else "")
        self.calls[target] += 1
        status, headers = self.answers.get(request.url.path, (200, {}))
        body = {"call": self.calls[target], "headers": dict(request.headers)}
        return JSONResponse(body, status_code=status, headers=headers)


class Cdn:
    """The running cache, its upstream and clock, and a client without a cookie jar."""

    def __init__(self, upstream: Upstream, clock: Clock, client: httpx2.Client) -> None:
        self.upstream = upstream
        self.clock = clock
        self._client = client

    def get(self, target: str, headers: dict[str, str] | None = None) -> httpx2.Response:
        """A GET through the cache carrying exactly *headers*: a new visitor each time."""
        self._client.cookies.clear()
        return self._client.get(target, headers=headers)

    def post(self, target: str) -> httpx2.Response:
        self._client.cookies.clear()
        return self._client.post(target, content=b"form")


@contextmanager
def running(**options: Any) -> Iterator[Cdn]:
    """An upstream and a :class:`SharedCache` (given *options*) in front of it, served."""
    upstream, clock = Upstream(), Clock()
    with (
        serve(upstream.app, lifespan="off") as origin,
        serve(SharedCache(origin, clock=clock, **options)) as url,
        httpx2.Client(base_url=url, trust_env=False) as client,
    ):
        yield Cdn(upstream, clock, client)


@pytest.fixture(scope="module")
def cdn() -> Iterator[Cdn]:
    with running(heuristic_ttl=HEURISTIC_TTL) as started:
        yield started


@pytest.fixture
def page() -> str:
    """A path no other test uses."""
    return f"/{uuid.uuid4().hex}"


def test_a_public_response_is_served_to_everyone_from_one_upstream_call(
    cdn: Cdn, page: str
) -> None:
    cdn.upstream.answer(page, PUBLIC)
    first = cdn.get(page, {"cookie": "visitor=a"})
    second = cdn.get(page, {"cookie": "visitor=b"})  # not part of the key
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()
    assert second.headers["cache-control"] == "public, max-age=60"
    assert second.headers["age"] == "0"
    assert "age" not in first.headers
    assert cdn.upstream.calls[page] == 1


@pytest.mark.parametrize(
    ("headers", "stored"),
    [
        ({"cache-control": "max-age=60"}, True),
        ({"cache-control": "public"}, True),  # heuristic lifetime
        ({}, True),  # heuristic lifetime
        ({"cache-control": "private, max-age=60"}, False),
        ({"cache-control": 'private="set-cookie", max-age=60'}, False),
        ({"cache-control": "no-store"}, False),
        ({"cache-control": "public, max-age=60, no-store"}, False),
        ({"cache-control": "no-cache, max-age=60"}, False),
        ({"cache-control": "max-age=0"}, False),
        ({"cache-control": "max-age=soon"}, False),
        ({"cache-control": "max-age=0, s-maxage=60"}, True),
        ({"cache-control": "public, max-age=60, s-maxage=0"}, False),
        ({"cache-control": "private", "cdn-cache-control": "max-age=60"}, True),
        ({"cache-control": "public, max-age=60", "cdn-cache-control": "no-store"}, False),
        ({"cache-control": "private", "surrogate-control": "max-age=60"}, True),
        ({"cache-control": "public, max-age=60", "surrogate-control": "no-store"}, False),
        ({"cache-control": "private", "cloudflare-cdn-cache-control": "max-age=60"}, True),
        (
            {"cdn-cache-control": "max-age=60", "cloudflare-cdn-cache-control": "private"},
            False,
        ),
        ({**PUBLIC, "vary": "*"}, False),
        ({**PUBLIC, "vary": "Accept-Language, *"}, False),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else str(value),
)
def test_what_a_shared_cache_may_store(
    cdn: Cdn, page: str, headers: dict[str, str], stored: bool
) -> None:
    cdn.upstream.answer(page, headers)
    first, second = cdn.get(page), cdn.get(page)
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == ("HIT" if stored else "MISS")
    assert cdn.upstream.calls[page] == (1 if stored else 2)


def test_a_response_is_fresh_until_its_age_reaches_its_lifetime(cdn: Cdn, page: str) -> None:
    cdn.upstream.answer(page, PUBLIC)
    cdn.get(page)
    cdn.clock.advance(59.5)
    almost = cdn.get(page)
    assert (almost.headers["x-cache"], almost.headers["age"]) == ("HIT", "59")
    cdn.clock.advance(0.5)
    expired = cdn.get(page)
    assert expired.headers["x-cache"] == "MISS"
    assert expired.json()["call"] == 2
    assert cdn.get(page).headers["age"] == "0"  # the new copy's age


@pytest.mark.parametrize(
    "headers",
    [
        {"cache-control": "public, max-age=600, s-maxage=30"},
        {"cache-control": "public, max-age=600", "cdn-cache-control": "max-age=30"},
        {"cache-control": "public, max-age=600", "surrogate-control": "max-age=30"},
    ],
    ids=["s-maxage", "cdn-cache-control", "surrogate-control"],
)
def test_the_shared_lifetime_wins_over_max_age(
    cdn: Cdn, page: str, headers: dict[str, str]
) -> None:
    cdn.upstream.answer(page, headers)
    cdn.get(page)
    cdn.clock.advance(29)
    assert cdn.get(page).headers["x-cache"] == "HIT"
    cdn.clock.advance(1)
    assert cdn.get(page).headers["x-cache"] == "MISS"


def test_the_heuristic_lifetime_applies_without_an_explicit_one(cdn: Cdn, page: str) -> None:
    cdn.upstream.answer(page, {"cache-control": "public"})
    cdn.get(page)
    cdn.clock.advance(HEURISTIC_TTL - 1)
    assert cdn.get(page).headers["x-cache"] == "HIT"
    cdn.clock.advance(1)
    assert cdn.get(page).headers["x-cache"] == "MISS"


def test_vary_keeps_one_response_per_value_of_the_listed_headers(cdn: Cdn, page: str) -> None:
    cdn.upstream.answer(page, {**PUBLIC, "vary": "Accept-Language"})
    english, french = {"accept-language": "en"}, {"accept-language": "fr"}
    assert cdn.get(page, english).headers["x-cache"] == "MISS"
    assert cdn.get(page, french).headers["x-cache"] == "MISS"
    assert cdn.get(page).headers["x-cache"] == "MISS"  # absent is a value of its own
    for headers in (english, french):
        again = cdn.get(page, headers)
        assert again.headers["x-cache"] == "HIT"
        assert again.json()["headers"]["accept-language"] == headers["accept-language"]
    assert cdn.upstream.calls[page] == 3


def test_set_cookie_is_stored_and_replayed_to_the_next_visitor(cdn: Cdn, page: str) -> None:
    cdn.upstream.answer(page, {**PUBLIC, "set-cookie": "session=first-visitor; Path=/"})
    cdn.get(page)
    hit = cdn.get(page, {"cookie": "session=second-visitor"})
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers.get_list("set-cookie") == ["session=first-visitor; Path=/"]


def test_the_key_is_path_and_query(cdn: Cdn, page: str) -> None:
    other = f"{page}-other"
    for path in (page, other):
        cdn.upstream.answer(path, PUBLIC)
    targets = (page, f"{page}?x=1", f"{page}?x=2", f"{other}?x=1")
    for target in targets:
        assert cdn.get(target).headers["x-cache"] == "MISS"
        assert cdn.get(target).headers["x-cache"] == "HIT"
    assert [cdn.upstream.calls[target] for target in targets] == [1, 1, 1, 1]


def test_only_a_get_answered_200_is_stored(cdn: Cdn, page: str) -> None:
    missing = f"{page}-missing"
    cdn.upstream.answer(page, PUBLIC)
    cdn.upstream.answer(missing, PUBLIC, status=404)
    assert [cdn.post(page).headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]
    assert cdn.get(page).headers["x-cache"] == "MISS"  # the POSTs stored nothing
    answers = [cdn.get(missing) for _ in range(2)]
    assert [r.status_code for r in answers] == [404, 404]
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "MISS"]


def test_the_least_recently_used_url_goes_first() -> None:
    with running(max_entries=2) as cdn:
        for path in ("/a", "/b", "/c"):
            cdn.upstream.answer(path, PUBLIC)
        cdn.get("/a")
        cdn.get("/b")
        assert cdn.get("/a").headers["x-cache"] == "HIT"  # /b is now the least recently used
        cdn.get("/c")
        assert [cdn.get(path).headers["x-cache"] for path in ("/a", "/c", "/b")] == [
            "HIT",
            "HIT",
            "MISS",
        ]


def test_end_to_end_headers_are_forwarded_and_no_cookie_is_kept(cdn: Cdn, page: str) -> None:
    login = f"{page}-login"
    cdn.upstream.answer(login, {"cache-control": "no-store", "set-cookie": "session=s1"})
    assert cdn.get(login).headers["set-cookie"] == "session=s1"
    sent = {"user-agent": "Mozilla/5.0 test", "x-site": "1", "connection": "x-hop", "x-hop": "1"}
    arrived = cdn.get(page, sent).json()["headers"]
    assert arrived["user-agent"] == "Mozilla/5.0 test"
    assert arrived["x-site"] == "1"
    assert "x-hop" not in arrived  # named by Connection: for this hop only
    assert "cookie" not in arrived  # the first visitor's cookie stayed with the first visitor


def test_only_a_loopback_upstream_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"forwards to 127\.0\.0\.1 only"):
        SharedCache("http://example.com")

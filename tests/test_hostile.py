"""Hostile requests against the real middleware and collector, driven by hypothesis.

Each example is one request, as an ASGI server would hand it over: any method,
path, query string, cookies (valid, tampered, repeated, junk), forwarding
headers, Host, Origin, content type and body. The same request also goes to
the bare app. Asserted directly, for every example:

1. no 5xx, and no exception escapes the middleware;
2. no log record carrying a traceback, and none saying something failed;
3. the app's own response is unchanged but for our headers (cookie, caching,
   length) and the one injected script tag;
4. a collector request that is refused records nothing;
5. memory stays bounded: every cache and the event buffer within its bound.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Scope

import optibase_edge._middleware as middleware_module
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
)
from optibase_edge._cookie import CookieCodec
from optibase_edge._middleware import SCOPE_KEY

SECRET = "hostile-input-secret-" + "h" * 32
PAGE = b"<!doctype html><html><head><title>shop</title></head><body><p>hello</p></body></html>"
CACHE_BOUND = 16
BUFFER_BOUND = 64
# Headers the middleware may add or rewrite; everything else must be the app's own.
OURS = {
    b"set-cookie",
    b"cache-control",
    b"content-length",
    b"etag",
    b"cdn-cache-control",
    b"surrogate-control",
    b"cloudflare-cdn-cache-control",
    b"retry-after",
}
TAG = re.compile(rb'<script src="[^"]*/_optibase/script\.js\?v=[0-9a-f]+"[^>]*></script>')


async def page(request: Request) -> Response:
    visitor = request.scope.get(SCOPE_KEY)
    if visitor is not None:  # the bare app has none: its page is the same either way
        visitor.variant("hero")
        if "buy" in request.query_params:
            await visitor.convert("purchase")
    return HTMLResponse(PAGE)


async def streamed(request: Request) -> Response:
    async def chunks() -> Any:
        for start in range(0, len(PAGE), 7):
            yield PAGE[start : start + 7]

    return StreamingResponse(chunks(), media_type="text/html")


async def data(request: Request) -> Response:
    return JSONResponse({"ok": True, "path": request.url.path})


ROUTES = [
    Route("/", page, methods=["GET", "POST"]),
    Route("/streamed", streamed),
    Route("/data", data),
]


def make_optibase() -> Optibase:
    received: list[dict[str, Any]] = []

    def handler(batch: Batch) -> Outcome:
        received.extend(batch.decoded())
        return Outcome(200)

    ob = Optibase(
        tests=[
            Test(id="hero", variants=[Variant("a"), Variant("b")], pages=["/*"]),
            Test(id="split", variants=[Variant("old"), Variant("new")], pages=["/data"]),
        ],
        conversions=[
            Conversion("signup", ConversionType.CLICK, selector="#signup"),
            Conversion("lead", ConversionType.PROGRAMMATIC, from_browser=True),
            Conversion("purchase", ConversionType.PROGRAMMATIC),
            Conversion("seen", ConversionType.PAGE_VIEW, url="/streamed"),
        ],
        secret_keys=[SECRET],
        transport=MockTransport(handler),
        trusted_proxies=["127.0.0.0/8"],
        max_buffer_events=BUFFER_BOUND,
    )
    # Small bounds, so that a few hundred examples would overflow anything unbounded.
    ob._codec._cache_size = CACHE_BOUND
    ob._seen._maxsize = CACHE_BOUND
    return ob


OPTIBASE = make_optibase()
SITE = OptibaseMiddleware(Starlette(routes=ROUTES), optibase=OPTIBASE)
BUDGETS = [
    b for b in (SITE._endpoints._ip_budgets, SITE._endpoints._visitor_budgets) if b is not None
]
for budget in BUDGETS:
    budget._maxsize = CACHE_BOUND
BARE = Starlette(routes=ROUTES)
CODEC = CookieCodec([SECRET])
VALID_TOKENS = [
    CODEC.encode(f"6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d{i:02x}", {"hero": "ab"[i % 2]})
    for i in range(4)
]


# -- strategies ---------------------------------------------------------------------------

header_bytes = st.binary(max_size=64).filter(lambda b: b"\r" not in b and b"\n" not in b)
tampered = st.builds(
    lambda token, i, c: token[:i] + c + token[i + 1 :],
    st.sampled_from(VALID_TOKENS),
    st.integers(0, 120),
    st.characters(codec="ascii"),
)
cookie_values = st.one_of(
    st.sampled_from(VALID_TOKENS),
    tampered,
    st.text(alphabet=st.characters(codec="latin-1"), max_size=40),
    st.just("x" * 5000),
    st.just('"' + VALID_TOKENS[0] + '"'),
)


@st.composite
def cookie_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    names = st.sampled_from(["optibase_vid", "optibase_vid_preview", "other", "OPTIBASE_VID"])
    parts = draw(st.lists(st.tuples(names, cookie_values), max_size=4))
    text = "; ".join(f"{name}={value}" for name, value in parts)
    return [(b"cookie", text.encode("latin-1", "replace"))] if parts else []


def collector_bodies() -> st.SearchStrategy[bytes]:
    urls = st.sampled_from(
        ["http://site.test/", "https://site.test/", "http://evil.test/", "javascript:x", ""]
    )
    beacon = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["click", "conversion", "identify", ""]),
            "conversion_id": st.sampled_from(["signup", "lead", "purchase", "seen", "nope", ""]),
            "url": urls | st.text(max_size=20),
        },
        optional={"referrer": urls | st.integers(), "extra": st.text(max_size=20)},
    ).map(lambda d: json.dumps(d).encode())
    # Deep enough to exhaust the JSON decoder's recursion, small enough for the size cap.
    deep = st.sampled_from([3000, 4096]).map(lambda n: b"[" * n + b"]" * n)
    nested = st.just(b'{"":' * 1600 + b"1" + b"}" * 1600)
    return st.one_of(beacon, deep, nested, st.binary(max_size=200))


@st.composite
def requests(draw: st.DrawFn) -> tuple[Scope, bytes]:
    headers: list[tuple[bytes, bytes]] = [(b"host", draw(st.sampled_from([b"site.test", b""])))]
    to_collector = draw(st.booleans())
    if to_collector:
        path = draw(st.sampled_from(["/_optibase/collect", "/_optibase/variants", "/_optibase/x"]))
        method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT"]))
        body = draw(collector_bodies())
        if draw(st.integers(0, 4)):  # mostly as the script posts, so that bodies get read
            headers.append((b"content-type", b"application/json"))
    else:
        path = draw(
            st.sampled_from(["/", "/streamed", "/data", "/missing"])
            | st.text(max_size=30).map(lambda t: "/" + t)
        )
        method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST", "OPTIONS", "BREW"]))
        body = draw(st.binary(max_size=50))
    headers += draw(cookie_headers())
    optional = {
        b"user-agent": st.sampled_from([b"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", b""])
        | header_bytes,
        b"x-forwarded-for": header_bytes | st.just(b"198.51.100.7, 10.0.0.1"),
        b"x-forwarded-proto": st.sampled_from([b"https", b"http", b"ftp"]) | header_bytes,
        b"origin": st.sampled_from([b"http://site.test", b"https://site.test", b"null"])
        | header_bytes,
        b"sec-fetch-site": st.sampled_from([b"same-origin", b"cross-site"]) | header_bytes,
        b"content-type": st.sampled_from([b"application/json", b"text/plain"]) | header_bytes,
        b"content-length": st.sampled_from([str(len(body)).encode()] * 3 + [b"-1", b"x", b"99999"]),
        b"accept-language": header_bytes,
        b"referer": header_bytes,
        b"sec-gpc": st.sampled_from([b"1", b"0"]),
        b"sec-purpose": st.sampled_from([b"prefetch", b""]),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        headers.append((name, draw(optional[name])))
    # What an HTTP parser lets through: printable ASCII, percent-escapes of any byte.
    query = draw(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(str.encode)
        | st.sampled_from([b"buy=1", b"optibase_preview=hero:b", b"%ff%00=%c3%28"])
    )
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": draw(st.sampled_from(["http", "https"])),
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "root_path": "",
        "query_string": query,
        "headers": headers,
        "client": draw(st.sampled_from([("127.0.0.1", 5000), ("203.0.113.5", 5000), None])),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    return scope, body


# -- running one request ------------------------------------------------------------------


async def call(app: Any, scope: Scope, body: bytes) -> list[Message]:
    sent: list[Message] = []
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive() -> Message:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)  # a client that sends nothing more
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def response_of(messages: list[Message]) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    start = messages[0]
    assert start["type"] == "http.response.start"
    headers: dict[bytes, list[bytes]] = {}
    for name, value in start["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, body


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("optibase_edge")
    logger.addHandler(handler)
    saved_cache = middleware_module._TAG_CACHE_SIZE
    middleware_module._TAG_CACHE_SIZE = CACHE_BOUND
    try:
        yield handler
    finally:
        middleware_module._TAG_CACHE_SIZE = saved_cache
        logger.removeHandler(handler)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_hostile_requests_keep_every_invariant(
    records: Records, request: tuple[Scope, bytes]
) -> None:
    scope, body = request
    accepted_before = OPTIBASE.stats()["accepted"]
    records.records.clear()

    async def both() -> tuple[list[Message], list[Message]]:
        ours = await asyncio.wait_for(call(SITE, copy.deepcopy(scope), body), 10)
        bare: list[Message] = []
        if not scope["path"].startswith("/_optibase/"):
            bare = await asyncio.wait_for(call(BARE, copy.deepcopy(scope), body), 10)
        return ours, bare

    ours, bare = asyncio.run(both())  # 1. an exception escaping would fail right here
    status, headers, content = response_of(ours)
    assert status < 500, (status, content)

    # 2. nothing worth a traceback, nothing that failed
    for record in records.records:
        assert record.exc_info is None, record.getMessage()
        assert "fail" not in record.getMessage().lower(), record.getMessage()

    if bare:
        # 3. the app's own response, but for our headers and the tag
        bare_status, bare_headers, bare_content = response_of(bare)
        assert status == bare_status
        for name in set(headers) | set(bare_headers):
            if name not in OURS:
                assert headers.get(name) == bare_headers.get(name), name
        assert len(TAG.findall(content)) <= 1
        assert TAG.sub(b"", content) == bare_content
        if b"content-length" in headers and scope["method"] != "HEAD":
            assert headers[b"content-length"] == [str(len(content)).encode()]
    elif scope["path"] == "/_optibase/collect" and status != 204:
        # 4. a refused beacon records nothing
        assert OPTIBASE.stats()["accepted"] == accepted_before, (status, content)

    # 5. bounded, however many strangers came
    assert len(OPTIBASE._codec._verified) <= CACHE_BOUND
    assert len(OPTIBASE._seen) <= CACHE_BOUND
    assert len(SITE._tag_cache) <= CACHE_BOUND
    assert all(len(budget) <= CACHE_BOUND for budget in BUDGETS) and len(BUDGETS) == 2
    assert OPTIBASE._delivery._queue.buffered() <= BUFFER_BOUND

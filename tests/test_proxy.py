"""``ReverseProxy`` over real HTTP: a loopback origin and the proxy, each under uvicorn.

The origin is one Starlette app for the module, served at ``/`` and again under
``/mount`` (for a proxy with a path prefix). It tells what reached it (path,
headers, body chunks) and keeps the events a test uses to hold an answer back
or to see that it stopped; each test sets or clears the ones it uses. The
rules for headers are tested as pure functions too, with hypothesis.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import logging
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from optibase_edge import (
    Conversion,
    ConversionType,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    ReverseProxy,
    Test,
    Variant,
)
from optibase_edge._codings import DECODABLE
from optibase_edge._forwarding import (
    HOP_BY_HOP,
    Upstream,
    accept_encoding,
    request_headers,
)
from tests.support.net import free_port
from tests.support.polling import wait_until
from tests.support.server import serve
from tests.support.user_agents import DESKTOP_USER_AGENT

CHUNK = 64 * 1024
BIG = 20 * 1024 * 1024
WAIT = 5.0  # the longest the origin holds an answer back for a test
GZIPPED = gzip.compress(b"<!doctype html><p>compressed page</p>" * 100)
COOKIES = [
    "session=abc; Domain=127.0.0.1; Path=/; HttpOnly",
    "theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; domain=.127.0.0.1; Secure",
    "partner=1; Domain=partner.example; Path=/",
    "plain=2",
]
HOP_REQUEST = {
    "connection": "keep-alive, x-private",
    "keep-alive": "timeout=5",
    "proxy-authorization": "Basic c2VjcmV0",
    "te": "trailers",
    "trailer": "x-checksum",
    "upgrade": "h2c",
    "x-private": "for the proxy only",
    "x-kept": "yes",
}
HOP_RESPONSE = {
    "connection": "x-secret",
    "keep-alive": "timeout=5",
    "proxy-authenticate": "Basic",
    "trailer": "x-checksum",
    "upgrade": "h2c",
    "x-secret": "for the proxy only",
    "x-kept": "yes",
}


def big_body() -> Iterator[bytes]:
    for index in range(BIG // CHUNK):
        yield bytes([index % 251]) * CHUNK


async def released(event: threading.Event) -> bool:
    """Whether *event* is set within ``WAIT`` seconds, asked without blocking the loop."""
    deadline = time.monotonic() + WAIT
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


class Origin:
    """The site behind the proxy, and what it saw."""

    def __init__(self) -> None:
        self.url = ""
        self.release = threading.Event()  # lets a held answer go on
        self.entered = threading.Event()  # a held request has arrived
        self.stopped = threading.Event()  # the endless body was stopped
        self.upload_started = threading.Event()  # the first chunk of an upload arrived
        self.in_flight = 0
        self.most_in_flight = 0
        self.upload_end: str | None = None
        self.big_finished = False
        routes = [
            Route("/echo", self._echo, methods=["GET", "POST", "PUT"]),
            Route("/upload", self._upload, methods=["POST"]),
            Route("/big", self._big),
            Route("/gzip", self._gzip),
            Route("/redirect", self._redirect),
            Route("/cookies", self._cookies),
            Route("/hop", self._hop),
            Route("/slow", self._slow),
            Route("/stall", self._stall),
            Route("/break", _Breaking()),
            Route("/endless", self._endless),
            Route("/hold", self._hold),
        ]
        self.app = Starlette(routes=[*routes, Mount("/mount", routes=routes)])

    async def _echo(self, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
                "body": len(body),
            }
        )

    async def _upload(self, request: Request) -> Response:
        chunks = []
        try:
            async for chunk in request.stream():
                chunks.append(chunk)
                self.upload_started.set()
        except ClientDisconnect:
            self.upload_end = "disconnected"
            raise
        self.upload_end = "complete"
        return Response(b"".join(chunks), headers={"x-chunks": str(len(chunks))})

    async def _big(self, request: Request) -> StreamingResponse:
        self.big_finished = False

        async def body() -> AsyncIterator[bytes]:
            chunks = big_body()
            yield next(chunks)
            if not await released(self.release):
                return  # cut short: the test sees a wrong length
            for chunk in chunks:
                yield chunk
            self.big_finished = True

        return StreamingResponse(body())

    async def _gzip(self, request: Request) -> Response:
        headers = {"content-encoding": "gzip", "vary": "accept-encoding"}
        return Response(GZIPPED, media_type="text/html", headers=headers)

    async def _redirect(self, request: Request) -> Response:
        return Response(status_code=302, headers={"location": request.query_params["to"]})

    async def _cookies(self, request: Request) -> Response:
        response = Response(b"cookies")
        response.raw_headers.extend((b"set-cookie", c.encode()) for c in COOKIES)
        return response

    async def _hop(self, request: Request) -> Response:
        return Response(b"hop", headers=HOP_RESPONSE)

    async def _slow(self, request: Request) -> Response:
        await released(self.release)
        return Response(b"late")

    async def _stall(self, request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first part"
            await released(self.release)
            yield b"second part"

        return StreamingResponse(body())

    async def _endless(self, request: Request) -> StreamingResponse:
        self.stopped.clear()

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"x" * 1024
                    await asyncio.sleep(0.01)
            finally:
                self.stopped.set()

        return StreamingResponse(body())

    async def _hold(self, request: Request) -> Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.entered.set()
        try:
            await released(self.release)
        finally:
            self.in_flight -= 1
        return Response(b"held")


class _Breaking:
    """Starts a chunked 200 and fails mid-body: uvicorn closes the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first part", "more_body": True})
        raise RuntimeError("the origin fails mid-body (on purpose)")


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    site = Origin()
    with serve(site.app, lifespan="off") as url:
        site.url = url
        yield site


@pytest.fixture(autouse=True)
def fresh(origin: Origin) -> Iterator[None]:
    origin.release.clear()
    origin.entered.clear()
    yield
    origin.release.set()  # nothing is left held for the next test (or the shutdown)


@pytest.fixture(scope="module")
def proxy(origin: Origin) -> Iterator[str]:
    with serve(ReverseProxy(origin.url)) as url:
        yield url


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(trust_env=False, timeout=10) as http:
        yield http


def seen_headers(response: httpx2.Response) -> dict[str, str]:
    """The headers the origin's echo saw, as a dict (each name is there once)."""
    return dict(response.json()["headers"])


def raw_request(url: str, data: bytes, *, close_after_send: bool = False) -> bytes:
    """Send *data* to the server at *url* on a socket; what came back until it closed."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=WAIT) as sock:
        sock.sendall(data)
        if close_after_send:
            return b""
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_large_request_body_streams_up_in_chunks_and_comes_back_intact(
    origin: Origin, proxy: str, client: httpx2.Client, framing: str
) -> None:
    body = random.Random(7).randbytes(5 * 1024 * 1024)
    origin.upload_started.clear()

    def pieces() -> Iterator[bytes]:
        yield body[:CHUNK]
        # The rest only once the origin has the start: the proxy must not wait for it all.
        assert origin.upload_started.wait(WAIT), "the origin got nothing of the body yet"
        for start in range(CHUNK, len(body), CHUNK):
            yield body[start : start + CHUNK]

    headers = {"content-length": str(len(body))} if framing == "content-length" else {}
    response = client.post(f"{proxy}/upload", content=pieces(), headers=headers)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()
    assert int(response.headers["x-chunks"]) > 1  # not gathered into one message


def test_a_large_response_is_forwarded_while_the_origin_is_still_sending(
    origin: Origin, proxy: str, client: httpx2.Client
) -> None:
    digest = hashlib.sha256()
    with client.stream("GET", f"{proxy}/big") as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # The origin holds the rest back until now: the proxy did not wait for it all.
        assert first and not origin.big_finished
        origin.release.set()
        digest.update(first)
        size = len(first)
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
    expected = hashlib.sha256(b"".join(big_body())).digest()
    assert (size, digest.digest()) == (BIG, expected)


def test_a_compressed_body_passes_through_compressed(proxy: str, client: httpx2.Client) -> None:
    with client.stream("GET", f"{proxy}/gzip", headers={"accept-encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert raw == GZIPPED
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(GZIPPED))


# -- the request ---------------------------------------------------------------------------


def test_the_path_and_query_go_up_as_the_client_sent_them(
    proxy: str, client: httpx2.Client
) -> None:
    response = client.post(f"{proxy}/echo?b=%20&a=1&a=2", content=b"12345")
    seen = response.json()
    assert (seen["method"], seen["raw_path"], seen["query"]) == ("POST", "/echo", "b=%20&a=1&a=2")
    assert seen["body"] == 5


def test_a_path_prefix_is_put_before_the_path_and_cannot_be_climbed_out_of(
    origin: Origin,
) -> None:
    with serve(ReverseProxy(f"{origin.url}/mount/")) as proxy:
        raw = raw_request(
            proxy, b"GET /x/../../echo?q=1 HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"
        )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b'"raw_path":"/mount/echo","query":"q=1"' in body


def test_hop_by_hop_headers_stop_at_the_proxy_and_host_is_the_upstreams(
    origin: Origin, proxy: str, client: httpx2.Client
) -> None:
    seen = seen_headers(client.get(f"{proxy}/echo", headers=HOP_REQUEST))
    assert not (set(seen) & (set(HOP_REQUEST) - {"x-kept"}))
    assert seen["x-kept"] == "yes"
    assert seen["host"] == urlsplit(origin.url).netloc


def test_the_upstream_is_told_who_asked_and_how(proxy: str, client: httpx2.Client) -> None:
    seen = seen_headers(client.get(f"{proxy}/echo"))
    # The client's own address, as the edge's server put it in the scope.
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == urlsplit(proxy).netloc


@pytest.mark.parametrize(
    ("offered", "forwarded"),
    [
        (
            "zstd, br;q=0.9, GZIP;q=0.8, compress, *;q=0.1",
            "br;q=0.9, GZIP;q=0.8" if "br" in DECODABLE else "GZIP;q=0.8",
        ),
        ("zstd", "identity"),
        (None, "identity"),
    ],
)
def test_the_upstream_is_offered_only_codings_the_middleware_decodes(
    proxy: str, client: httpx2.Client, offered: str | None, forwarded: str
) -> None:
    headers = {"accept-encoding": offered} if offered is not None else {}
    request = client.build_request("GET", f"{proxy}/echo", headers=headers)
    if offered is None:
        del request.headers["accept-encoding"]
    assert seen_headers(client.send(request))["accept-encoding"] == forwarded


# -- the response --------------------------------------------------------------------------


def test_hop_by_hop_headers_stop_at_the_proxy_on_the_way_back(
    origin: Origin, proxy: str, client: httpx2.Client
) -> None:
    direct = client.get(f"{origin.url}/hop")
    assert set(HOP_RESPONSE) <= set(direct.headers)  # what the proxy is given
    response = client.get(f"{proxy}/hop")
    assert not (set(response.headers) & (set(HOP_RESPONSE) - {"x-kept"}))
    assert response.headers["x-kept"] == "yes"
    assert response.headers["content-length"] == "3"
    # The edge's server writes its own Date and Server: one of each.
    assert len(response.headers.get_list("date")) == len(response.headers.get_list("server")) == 1


@pytest.mark.parametrize(
    ("location", "rewritten"),
    [
        ("{origin}/landing?a=1#top", "{proxy}/landing?a=1#top"),
        ("/landing", "/landing"),
        ("https://elsewhere.example/x", "https://elsewhere.example/x"),
    ],
)
def test_a_redirect_is_passed_on_unfollowed_with_the_upstream_replaced_by_the_edge(
    origin: Origin, proxy: str, client: httpx2.Client, location: str, rewritten: str
) -> None:
    target = location.format(origin=origin.url)
    response = client.get(f"{proxy}/redirect", params={"to": target})
    assert response.status_code == 302
    assert response.headers["location"] == rewritten.format(proxy=proxy)


def test_a_redirect_under_the_prefix_loses_the_prefix(
    origin: Origin, client: httpx2.Client
) -> None:
    with serve(ReverseProxy(f"{origin.url}/mount")) as proxy:
        target = f"{origin.url}/mount/landing"
        response = client.get(f"{proxy}/redirect", params={"to": target})
    assert response.headers["location"] == f"{proxy}/landing"


def test_cookies_stay_apart_and_bind_to_the_edge_instead_of_the_upstream(
    proxy: str, client: httpx2.Client
) -> None:
    response = client.get(f"{proxy}/cookies")
    assert response.headers.get_list("set-cookie") == [
        "session=abc; Path=/; HttpOnly",
        "theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure",
        "partner=1; Domain=partner.example; Path=/",
        "plain=2",
    ]


# -- failures ------------------------------------------------------------------------------


def assert_page(response: httpx2.Response, status: int, reason: str, text: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.text.startswith(f"<!doctype html><title>{status} {reason}</title>")
    assert text in response.text


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "optibase_edge" and r.levelno == logging.WARNING and not r.exc_info
    ]


def test_an_upstream_that_cannot_be_reached_is_a_502_page(
    client: httpx2.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(ReverseProxy(f"http://127.0.0.1:{free_port()}")) as proxy:
        response = client.get(f"{proxy}/anything")
    assert_page(response, 502, "Bad Gateway", "could not be reached")
    assert any("ConnectError" in line for line in warnings(caplog))


def test_an_upstream_silent_past_the_read_timeout_is_a_504_page(
    origin: Origin, client: httpx2.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(ReverseProxy(origin.url, read_timeout=0.5)) as proxy:
        started = time.monotonic()
        response = client.get(f"{proxy}/slow")
        elapsed = time.monotonic() - started
    assert_page(response, 504, "Gateway Timeout", "did not answer in time")
    assert elapsed < WAIT / 2
    assert any("ReadTimeout" in line for line in warnings(caplog))


@pytest.mark.parametrize("path", ["/break", "/stall"])
def test_a_body_the_upstream_breaks_off_reaches_the_client_broken(
    origin: Origin, client: httpx2.Client, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with (
        serve(ReverseProxy(origin.url, read_timeout=0.5)) as proxy,
        client.stream("GET", proxy + path) as response,
    ):
        assert response.status_code == 200  # sent before the failure
        with pytest.raises(httpx2.RemoteProtocolError):
            response.read()  # not a complete-looking short body
    assert any("mid-body" in line for line in warnings(caplog))


def test_with_every_connection_in_use_a_request_waits_for_one(
    origin: Origin, client: httpx2.Client
) -> None:
    origin.most_in_flight = 0
    with (
        serve(ReverseProxy(origin.url, max_connections=1)) as proxy,
        ThreadPoolExecutor(2) as pool,
    ):
        first = pool.submit(client.get, f"{proxy}/hold")
        wait_until(origin.entered.is_set, "the first request to reach the origin")
        second = pool.submit(client.get, f"{proxy}/hold")
        time.sleep(0.2)  # time enough for a second connection, were one allowed
        origin.release.set()
        assert [first.result().status_code, second.result().status_code] == [200, 200]
    assert origin.most_in_flight == 1


def test_with_no_connection_free_within_the_connect_timeout_the_answer_is_a_503_page(
    origin: Origin, client: httpx2.Client
) -> None:
    with (
        serve(ReverseProxy(origin.url, max_connections=1, connect_timeout=0.3)) as proxy,
        ThreadPoolExecutor(1) as pool,
    ):
        first = pool.submit(client.get, f"{proxy}/hold")
        wait_until(origin.entered.is_set, "the first request to reach the origin")
        assert_page(client.get(f"{proxy}/echo"), 503, "Service Unavailable", "in use")
        origin.release.set()
        assert first.result().status_code == 200


# -- the client going away ---------------------------------------------------------------


def test_a_client_leaving_mid_response_stops_the_upstream(origin: Origin, proxy: str) -> None:
    with (
        httpx2.Client(trust_env=False, timeout=WAIT) as own,
        own.stream("GET", f"{proxy}/endless") as response,
    ):
        assert next(response.iter_raw())
    # The client's connection is closed with the response: the proxy must notice.
    wait_until(origin.stopped.is_set, "the origin's endless body to be stopped", timeout=WAIT)


def test_a_client_leaving_mid_upload_is_not_passed_off_as_a_whole_body(
    origin: Origin, proxy: str
) -> None:
    origin.upload_end = None
    host = urlsplit(proxy).netloc.encode()
    request = (
        b"POST /upload HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"
    )
    raw_request(proxy, request, close_after_send=True)
    wait_until(lambda: origin.upload_end, "the origin to see the upload end", timeout=WAIT)
    assert origin.upload_end == "disconnected"


# -- other scopes, life cycle, arguments --------------------------------------------------


def test_a_websocket_handshake_is_refused(proxy: str) -> None:
    host = urlsplit(proxy).netloc.encode()
    answer = raw_request(
        proxy,
        b"GET /socket HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 403")


class _RecordingTransport(httpx2.MockTransport):
    def __init__(self) -> None:
        super().__init__(lambda request: httpx2.Response(200, content=b"mocked"))
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def test_the_environment_names_no_other_way_to_the_upstream(
    origin: Origin, client: httpx2.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with serve(ReverseProxy(origin.url)) as proxy:
        assert client.get(f"{proxy}/echo").status_code == 200


def test_behind_the_middleware_a_proxied_page_is_tested_like_a_local_one(
    origin: Origin, client: httpx2.Client
) -> None:
    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("a"), Variant("b")], pages=["/cookies"])],
        conversions=[Conversion("cta", ConversionType.CLICK, selector=".cta")],
        secret_keys=["proxy-test-secret-0123456789abcdef"],
        transport=MockTransport(lambda batch: Outcome(200)),
    )
    with serve(OptibaseMiddleware(ReverseProxy(origin.url), optibase=ob)) as edge:
        response = client.get(f"{edge}/cookies", headers={"user-agent": DESKTOP_USER_AGENT})
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == len(COOKIES) + 1  # the origin's, and the visitor's
    assert any(c.startswith(f"{ob.settings.cookie_name}=") for c in cookies)


def test_lifespan_shutdown_closes_the_connections(client: httpx2.Client) -> None:
    transport = _RecordingTransport()
    with serve(ReverseProxy("http://upstream.invalid", transport=transport)) as proxy:
        assert client.get(f"{proxy}/").content == b"mocked"
        assert not transport.closed
    assert transport.closed


# The first loop's client is dropped unclosed (it cannot be closed from the second):
# its sockets are closed when it is collected, here, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_each_event_loop_gets_a_client_of_its_own(origin: Origin) -> None:
    proxy = ReverseProxy(origin.url)

    async def one_request(close: bool) -> list[Message]:
        sent: list[Message] = []
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/echo",
            "raw_path": b"/echo",
            "query_string": b"",
            "headers": [(b"host", b"edge")],
            "scheme": "http",
            "client": ("127.0.0.1", 5000),
        }

        async def receive() -> Message:
            await asyncio.sleep(WAIT)  # no disconnect while the answer comes
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        await proxy(scope, receive, send)
        if close:
            await proxy.aclose()
        return sent

    for close in (False, True):  # the first loop's keep-alive connection is useless in the second
        sent = asyncio.run(one_request(close))
        assert sent[0]["status"] == 200
    gc.collect()


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("ftp://127.0.0.1/", {}, "upstream_url"),
        ("127.0.0.1:8080", {}, "upstream_url"),
        ("http://", {}, "upstream_url"),
        ("http://127.0.0.1:99999/", {}, "upstream_url"),
        ("http://127.0.0.1/?q=1", {}, "upstream_url"),
        ("http://127.0.0.1/#top", {}, "upstream_url"),
        ("http://user:pw@127.0.0.1/", {}, "upstream_url"),
        ("http://127.0.0.1", {"connect_timeout": 0}, "connect_timeout"),
        ("http://127.0.0.1", {"read_timeout": -1.0}, "read_timeout"),
        ("http://127.0.0.1", {"read_timeout": float("nan")}, "read_timeout"),
        ("http://127.0.0.1", {"max_connections": 0}, "max_connections"),
    ],
)
def test_a_bad_argument_is_refused_by_name(url: str, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ReverseProxy(url, **options)


def test_a_good_upstream_is_taken() -> None:
    upstream = Upstream.parse("https://Origin.Example/app/")
    assert (upstream.scheme, upstream.host, upstream.port, upstream.prefix) == (
        "https",
        "origin.example",
        443,
        "/app",
    )


# -- the rules, as pure functions ----------------------------------------------------------

UPSTREAM = Upstream.parse("http://app.internal.example:8080")
EDGE = b"https://www.example.com"

codings = st.sampled_from(["gzip", "GZIP", "deflate", "br", "zstd", "compress", "identity", "*"])
parameters = st.sampled_from(["", ";q=0.5", "; q=1", ";q=0"])
items = st.builds(lambda c, p, s: s + c + p, codings, parameters, st.sampled_from(["", " "]))


def coding_of(item: bytes) -> str:
    return item.partition(b";")[0].strip().lower().decode()


@given(st.lists(items, max_size=8))
def test_accept_encoding_keeps_the_decodable_codings_in_order_with_their_parameters(
    offered: list[str],
) -> None:
    value = ",".join(offered).encode()
    result = accept_encoding(value)
    expected = [item.strip().encode() for item in offered if coding_of(item.encode()) in DECODABLE]
    assert result == (b", ".join(expected) if expected else b"identity")
    assert accept_encoding(result) == result


names = st.sampled_from(
    [*sorted(n.decode() for n in HOP_BY_HOP), "host", "x-a", "x-b", "cookie", "accept-encoding"]
)


@given(
    st.lists(st.tuples(names, st.sampled_from(["1", "gzip", "zstd, br", "x-a, x-b"])), max_size=10),
    st.one_of(st.none(), st.sampled_from(["10.0.0.1", "::1"])),
    st.lists(st.sampled_from(["203.0.113.9", "198.51.100.1, 10.0.0.2"]), max_size=2),
)
def test_request_headers_drop_what_is_per_hop_and_say_who_asked(
    pairs: list[tuple[str, str]], ip: str | None, forwarded: list[str]
) -> None:
    headers = [(n.encode(), v.encode()) for n, v in pairs]
    headers += [(b"x-forwarded-for", f.encode()) for f in forwarded]
    named = {t.strip().encode() for n, v in pairs if n == "connection" for t in v.split(",")}
    replaced = {b"host", b"accept-encoding", b"x-forwarded-for"}
    kept = [(n, v) for n, v in headers if n not in HOP_BY_HOP | named | replaced]
    hops = [*forwarded, *([ip] if ip else [])]
    added = [(b"x-forwarded-for", ", ".join(hops).encode())] if hops else []
    added.append((b"x-forwarded-proto", b"https"))
    added += [(b"x-forwarded-host", v) for n, v in headers if n == b"host"][-1:]
    offered = b", ".join(v for n, v in headers if n == b"accept-encoding")
    added.append((b"accept-encoding", accept_encoding(offered)))
    assert request_headers(headers, ip, "https") == kept + added


attributes = st.sampled_from(
    [
        " Path=/",
        " HttpOnly",
        " Expires=Wed, 21 Oct 2037 07:28:00 GMT",
        " Domain=app.internal.example",
        " domain=.APP.internal.example",
        " Domain=internal.example",
        " Domain=.example",
        " Domain=other.example",
        " Domain=nal.example",
        " Domain=",
        "Domain=app.internal.example ",
    ]
)
DROPPED = {
    " Domain=app.internal.example",
    " domain=.APP.internal.example",
    " Domain=internal.example",
    " Domain=.example",
    "Domain=app.internal.example ",
}


@given(st.lists(attributes, max_size=6))
def test_a_cookie_loses_only_a_domain_naming_the_upstream_or_a_parent_of_it(
    given_attributes: list[str],
) -> None:
    value = ";".join(["id=1", *given_attributes]).encode()
    kept = [a for a in given_attributes if a not in DROPPED]
    assert UPSTREAM.cookie(value) == ";".join(["id=1", *kept]).encode()


@pytest.mark.parametrize(
    ("location", "edge", "rewritten"),
    [
        (b"http://app.internal.example:8080/a?b#c", EDGE, b"https://www.example.com/a?b#c"),
        (b"HTTP://APP.internal.example:8080", EDGE, b"https://www.example.com/"),
        (b"http://app.internal.example:8080/a", None, b"/a"),
        (b"http://app.internal.example/a", EDGE, b"http://app.internal.example/a"),
        (b"https://app.internal.example:8080/a", EDGE, b"https://app.internal.example:8080/a"),
        (b"http://u@app.internal.example:8080/a", EDGE, b"http://u@app.internal.example:8080/a"),
        (b"http://app.internal.example:bad/a", EDGE, b"http://app.internal.example:bad/a"),
        (b"/a", EDGE, b"/a"),
        (b"//app.internal.example:8080/a", EDGE, b"//app.internal.example:8080/a"),
    ],
)
def test_a_location_into_the_upstream_points_at_the_edge(
    location: bytes, edge: bytes | None, rewritten: bytes
) -> None:
    assert UPSTREAM.location(location, edge) == rewritten


@pytest.mark.parametrize(
    ("location", "rewritten"),
    [
        (b"http://origin/app/a?b", b"https://www.example.com/a?b"),
        (b"http://origin/app", b"https://www.example.com/"),
        (b"http://origin/app?b", b"https://www.example.com/?b"),
        (b"http://origin/application", b"http://origin/application"),
        (b"http://origin/other", b"http://origin/other"),
    ],
)
def test_a_location_loses_the_upstream_prefix(location: bytes, rewritten: bytes) -> None:
    assert Upstream.parse("http://origin/app/").location(location, EDGE) == rewritten


@pytest.mark.parametrize(
    ("trusted", "peer", "scheme"),
    [
        (["10.0.0.0/8"], "10.1.2.3", "https"),  # the TLS terminator says so
        (["10.0.0.0/8"], "192.0.2.7", "http"),  # anyone else may not
        ([], "10.1.2.3", "http"),
    ],
)
def test_a_trusted_tls_terminator_tells_the_clients_scheme(
    trusted: list[str], peer: str, scheme: str
) -> None:
    seen: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(302, headers={"location": "http://origin.test/login"})

    app = ReverseProxy(
        "http://origin.test", trusted_proxies=trusted, transport=httpx2.MockTransport(upstream)
    )
    headers = [(b"host", b"www.example.com"), (b"x-forwarded-proto", b"https")]
    sent: list[Message] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays until the response is done
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "scheme": "http", "path": "/", "raw_path": b"/",
        "query_string": b"", "headers": headers, "client": (peer, 50000),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert seen[0].headers["x-forwarded-proto"] == scheme
    location = dict(sent[0]["headers"])[b"location"]
    assert location == f"{scheme}://www.example.com/login".encode()


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        ReverseProxy("http://127.0.0.1:1", trusted_proxies=["not-a-network"])

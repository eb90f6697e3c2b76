"""Variant blocks served by the middleware: one variant shown, assigned and exposed when served.

In-process, message by message as a server drives the middleware: which
block a visitor is shown, when the test is assigned and its Experiment Viewed
sent (only with a block served, once), what the cookie and the caching
headers say, a compressed page rewritten and coded again, and what happens
past the part of a page held back while the cookie is still open.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from typing import Any

import brotli
import pytest
from starlette.types import Message, Receive, Scope, Send

from optibase_edge import (
    Batch,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
)
from optibase_edge._assignment import choose, compile_test
from optibase_edge._blocks import VariantBlocks
from optibase_edge._middleware import _HOLD_LIMIT

pytestmark = pytest.mark.anyio

HERO = Test(id="hero", variants=[Variant("control"), Variant("bold")])
PAGE = (
    b"<!doctype html><html><head><title>Home</title></head><body><nav>menu</nav>"
    b'<div data-optibase-test="hero" data-optibase-variant="control"><h1>Plain</h1></div>'
    b"<div data-optibase-test='hero' data-optibase-variant='bold'><h1>BOLD</h1></div>"
    b"<footer>end</footer></body></html>"
)
BLOCK = re.compile(rb"<h1>(\w+)</h1>")
BROWSER = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
GOOGLEBOT = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


class Site:
    """The middleware in front of an app that sends *chunks* of HTML; the events it sent."""

    def __init__(
        self,
        chunks: Sequence[bytes] = (PAGE,),
        tests: Sequence[Test] = (HERO,),
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        inject: bool = False,
        status: int = 200,
        **settings: Any,
    ) -> None:
        self.events: list[dict[str, Any]] = []

        def record(batch: Batch) -> Outcome:
            self.events.extend(batch.decoded())
            return Outcome(200)

        self.optibase = Optibase(
            tests=tests,
            secret_keys=["k" * 32],
            transport=MockTransport(record),
            inject_script=inject,
            **settings,
        )
        self.app_sent: list[str] = []  # the app's messages and the server's, in order
        length = sum(len(c) for c in chunks)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            start_headers = [(b"content-type", b"text/html; charset=utf-8"), *headers]
            if not any(name == b"content-encoding" for name, _ in headers):
                start_headers.append((b"content-length", str(length).encode()))
            await send({"type": "http.response.start", "status": status, "headers": start_headers})
            for i, chunk in enumerate(chunks):
                self.app_sent.append(f"app body {i}")
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1}
                )

        self.middleware = OptibaseMiddleware(app, optibase=self.optibase)

    async def get(
        self,
        cookie: str | None = None,
        *,
        method: str = "GET",
        user_agent: bytes = BROWSER,
        accept_encoding: bytes = b"gzip, br",
    ) -> Response:
        headers = [
            (b"host", b"site.test"),
            (b"user-agent", user_agent),
            (b"accept", b"text/html"),
            (b"accept-language", b"en"),
            (b"accept-encoding", accept_encoding),
        ]
        if cookie is not None:
            headers.append((b"cookie", f"optibase_vid={cookie}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            self.app_sent.append(message["type"])
            sent.append(message)

        self.app_sent.clear()
        await self.middleware(scope, receive, send)
        return Response(sent, list(self.app_sent))

    async def delivered(self) -> list[dict[str, Any]]:
        assert await self.optibase.flush(5.0)
        return self.events

    def viewed(self) -> list[tuple[str, str, str]]:
        return [
            (e["anonymousId"], e["properties"]["test_id"], e["properties"]["variant_id"])
            for e in self.events
            if e.get("event") == "Experiment Viewed"
        ]


class Response:
    def __init__(self, sent: list[Message], order: list[str]) -> None:
        self.start = sent[0]
        self.body = b"".join(m.get("body", b"") for m in sent[1:])
        self.order = order
        self.headers: dict[bytes, list[bytes]] = {}
        for name, value in self.start["headers"]:
            self.headers.setdefault(name.lower(), []).append(value)

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name)
        return values[-1] if values else None

    @property
    def cookie(self) -> str | None:
        for value in self.headers.get(b"set-cookie", []):
            if value.startswith(b"optibase_vid="):
                return value.split(b";")[0].split(b"=", 1)[1].decode()
        return None

    def text(self) -> bytes:
        coding = self.header(b"content-encoding")
        if coding == b"gzip":
            return gzip.decompress(self.body)
        if coding == b"br":
            plain: bytes = brotli.decompress(self.body)
            return plain
        return self.body

    def shown(self) -> list[str]:
        return [m.decode() for m in BLOCK.findall(self.text())]


def visitor_id(token: str) -> str:
    return token.split(".")[1]


def expected(test: Test, token: str) -> str:
    chosen = choose(compile_test(test), visitor_id(token))
    assert chosen is not None
    return chosen


async def test_a_new_visitor_sees_one_variant_assigned_and_exposed_once() -> None:
    site = Site()
    first = await site.get()
    token = first.cookie
    assert token is not None
    variant = expected(HERO, token)
    assert first.shown() == [{"control": "Plain", "bold": "BOLD"}[variant]]
    assert f".hero.{variant}." in token  # the assignment is in the cookie sent with the page
    assert first.header(b"content-length") == str(len(first.body)).encode()
    assert first.header(b"cache-control") == b"private"
    again = await site.get(token)
    assert again.shown() == first.shown()
    assert again.cookie is None  # nothing new to record
    await site.delivered()
    assert site.viewed() == [(visitor_id(token), "hero", variant)]


@pytest.mark.parametrize("variant", ["control", "bold"])
async def test_each_variant_is_shown_its_own_block(variant: str) -> None:
    site = Site()
    for _ in range(200):
        response = await site.get()
        assert response.cookie is not None
        if expected(HERO, response.cookie) == variant:
            break
    else:
        pytest.fail(f"no visitor in {variant} after 200")
    assert response.shown() == [{"control": "Plain", "bold": "BOLD"}[variant]]


async def test_a_returning_visitor_in_every_test_is_streamed_not_held() -> None:
    chunks = (PAGE[:100], PAGE[100:200], PAGE[200:])
    token = (await Site(chunks).get()).cookie
    assert token is not None
    site = Site(chunks, inject=True)  # the tag names the visitor: they are read at the start
    response = await site.get(token)
    # The start went out before the app had sent its last chunk.
    assert response.order.index("http.response.start") < response.order.index("app body 2")
    assert response.header(b"content-length") is None  # streamed: the server chunks it
    assert len(response.shown()) == 1


async def test_a_new_visitor_is_held_until_the_page_is_resolved() -> None:
    chunks = (PAGE[:100], PAGE[100:200], PAGE[200:])
    site = Site(chunks)
    response = await site.get()
    assert response.order.index("http.response.start") > response.order.index("app body 2")
    assert response.cookie is not None
    assert f".hero.{expected(HERO, response.cookie)}." in response.cookie


async def test_a_page_without_blocks_is_the_apps_byte_for_byte() -> None:
    page = b"<html><head></head><body><p>no tests here</p></body></html>"
    site = Site((page[:20], page[20:]), headers=[(b"etag", b'"v1"')])
    response = await site.get()
    assert response.body == page
    assert response.header(b"etag") == b'"v1"'
    assert response.header(b"content-length") == str(len(page)).encode()
    assert response.cookie is None  # the visitor was never read
    assert response.header(b"cache-control") is None  # the app's caching stands
    assert await site.delivered() == []


async def test_a_test_without_a_block_on_the_page_is_not_assigned() -> None:
    other = Test(id="pricing", variants=[Variant("monthly"), Variant("yearly")])
    site = Site(tests=(HERO, other))
    response = await site.get()
    assert response.cookie is not None
    assert ".pricing." not in response.cookie
    await site.delivered()
    assert [test for _, test, _ in site.viewed()] == ["hero"]


@pytest.mark.parametrize(
    ("test", "shown"),
    [
        (Test(id="hero", variants=[Variant("control"), Variant("bold")], traffic=0), "Plain"),
        (Test(id="hero", variants=[Variant("control"), Variant("bold")], status="paused"), "Plain"),
        (
            Test(
                id="hero",
                variants=[Variant("control"), Variant("bold")],
                status="stopped",
                winner="bold",
            ),
            "BOLD",
        ),
        (Test(id="other", variants=[Variant("x"), Variant("y")]), "Plain"),  # hero: unknown
    ],
    ids=["outside-traffic", "paused", "stopped-with-winner", "unknown-test"],
)
async def test_outside_the_test_everyone_sees_the_same_block(test: Test, shown: str) -> None:
    site = Site(tests=(test,))
    for _ in range(5):
        response = await site.get()
        assert response.shown() == [shown]
        assert response.cookie is None or ".hero." not in response.cookie
    await site.delivered()
    assert site.viewed() == []


async def test_a_bot_sees_the_control_and_records_nothing() -> None:
    site = Site()
    response = await site.get(user_agent=GOOGLEBOT)
    assert response.shown() == ["Plain"]
    assert response.cookie is None
    assert await site.delivered() == []


async def test_unknown_tests_leave_the_page_public() -> None:
    site = Site(tests=())
    response = await site.get()
    assert response.shown() == ["Plain"]
    assert response.header(b"cache-control") is None  # the same page for everyone
    assert response.cookie is None


async def test_head_assigns_nothing() -> None:
    site = Site()
    response = await site.get(method="HEAD")
    assert response.cookie is None or ".hero." not in response.cookie
    await site.delivered()
    assert site.viewed() == []


async def test_a_block_inside_a_removed_block_is_neither_assigned_nor_exposed() -> None:
    inner = Test(id="cta", variants=[Variant("green"), Variant("red")])
    page = (
        b"<html><body>"
        b'<div data-optibase-test="hero" data-optibase-variant="control"><h1>Plain</h1>'
        b'<a data-optibase-test="cta" data-optibase-variant="green">Go</a></div>'
        b'<div data-optibase-test="hero" data-optibase-variant="bold"><h1>BOLD</h1></div>'
        b"</body></html>"
    )
    site = Site((page,), tests=(HERO, inner))
    response = await site.get()
    token = response.cookie
    assert token is not None
    variant = expected(HERO, token)
    await site.delivered()
    exposed = {test for _, test, _ in site.viewed()}
    assert exposed == ({"hero", "cta"} if variant == "control" else {"hero"})
    # The visitor's own variant of "cta" may have no block here: then none is shown.
    assert (b"Go" in response.body) == (variant == "control" and expected(inner, token) == "green")


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_a_compressed_page_is_rewritten_and_coded_again(coding: str) -> None:
    compress = gzip.compress if coding == "gzip" else brotli.compress
    coded = compress(PAGE)
    site = Site((coded[:50], coded[50:]), headers=[(b"content-encoding", coding.encode())])
    response = await site.get()
    assert response.header(b"content-encoding") == coding.encode()
    assert response.header(b"content-length") == str(len(response.body)).encode()
    assert response.cookie is not None
    variant = expected(HERO, response.cookie)
    assert response.shown() == [{"control": "Plain", "bold": "BOLD"}[variant]]


async def test_a_coding_it_cannot_undo_is_left_as_it_is() -> None:
    site = Site((b"\x28\xb5\x2f\xfd not really zstd",), headers=[(b"content-encoding", b"zstd")])
    response = await site.get()
    assert response.body == b"\x28\xb5\x2f\xfd not really zstd"
    assert response.header(b"content-encoding") == b"zstd"


async def test_a_badly_coded_page_is_passed_on_not_turned_into_an_error() -> None:
    site = Site((b"this is not gzip",), headers=[(b"content-encoding", b"gzip")])
    response = await site.get()
    assert response.start["status"] == 200
    assert response.body == b"this is not gzip"


async def test_blocks_past_the_held_part_of_a_page_assign_no_one() -> None:
    filler = b"<p>" + b"x" * 1000 + b"</p>"
    head = b"<html><body>" + filler * (_HOLD_LIMIT // len(filler) + 8)
    blocks = PAGE[PAGE.index(b"<div") : PAGE.index(b"<footer")]
    chunks = [head[i : i + 16384] for i in range(0, len(head), 16384)] + [blocks, b"</body>"]
    site = Site(chunks)
    response = await site.get()
    # The start went out once the held part was full: whatever followed is the
    # same for everyone, as nothing about the visitor had been used.
    assert response.order.index("http.response.start") < response.order.index(
        f"app body {len(chunks) - 1}"
    )
    assert response.shown() == ["Plain"]
    assert response.header(b"cache-control") is None
    assert await site.delivered() == []


async def test_past_the_held_part_a_visitor_keeps_the_variant_they_have() -> None:
    filler = b"<p>" + b"x" * 1000 + b"</p>"
    head = b"<html><head></head><body>" + filler * (_HOLD_LIMIT // len(filler) + 8)
    blocks = PAGE[PAGE.index(b"<div") : PAGE.index(b"<footer")]
    chunks = [head[i : i + 16384] for i in range(0, len(head), 16384)] + [blocks, b"</body>"]
    token = (await Site().get()).cookie
    assert token is not None
    # Two tests, the visitor in one: the start is held for the other, then let go.
    other = Test(id="pricing", variants=[Variant("monthly"), Variant("yearly")])
    site = Site(chunks, tests=(HERO, other), inject=True)
    response = await site.get(token)
    assert response.shown() == [{"control": "Plain", "bold": "BOLD"}[expected(HERO, token)]]
    assert response.header(b"cache-control") == b"private"
    await site.delivered()
    assert site.viewed() == []


async def test_a_page_for_one_visitor_without_blocks_keeps_its_etag_and_length() -> None:
    page = b"<html><head></head><body><p>no blocks</p></body></html>"
    on_home = Test(id="home", variants=[Variant("a"), Variant("b")], pages=["/"])
    # The visitor is read at the start (a test of this page), and is not in "hero"
    # yet: the start is held, and let go as the app sent it.
    site = Site((page[:20], page[20:]), tests=(on_home, HERO), headers=[(b"etag", b'"v1"')])
    response = await site.get()
    assert response.body == page
    assert response.header(b"etag") == b'"v1"'
    assert response.header(b"content-length") == str(len(page)).encode()
    assert response.header(b"cache-control") == b"private"
    assert response.cookie is not None and ".home." in response.cookie


async def test_a_failing_rewrite_serves_the_apps_page(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: VariantBlocks, chunk: bytes, more_body: bool) -> bytes:
        raise RuntimeError("a bug in the tokenizer")

    monkeypatch.setattr(VariantBlocks, "feed", broken)
    site = Site((PAGE[:100], PAGE[100:]))
    response = await site.get()
    assert response.start["status"] == 200
    assert response.body == PAGE
    assert "rewriting the page failed" in caplog.text


async def test_a_failing_csp_nonce_leaves_the_tag_out_not_the_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def nonce(scope: Scope) -> str:
        raise KeyError("no nonce in this scope")

    assert b"<script" in (await Site(inject=True).get()).body  # as it is with no nonce
    response = await Site(inject=True, csp_nonce=nonce).get()
    assert response.start["status"] == 200
    assert b"<script" not in response.body
    assert len(response.shown()) == 1
    assert "could not make the script tag" in caplog.text


async def test_past_the_held_part_a_visitor_not_in_the_test_is_not_assigned() -> None:
    filler = b"<p>" + b"x" * 1000 + b"</p>"
    head = b"<html><head></head><body>" + filler * (_HOLD_LIMIT // len(filler) + 8)
    blocks = PAGE[PAGE.index(b"<div") : PAGE.index(b"<footer")]
    chunks = [head[i : i + 16384] for i in range(0, len(head), 16384)] + [blocks, b"</body>"]
    site = Site(chunks, inject=True)  # the tag names the visitor: the response is theirs
    response = await site.get()
    assert response.shown() == ["Plain"]  # too late to assign them: the control
    assert response.header(b"cache-control") == b"private"
    assert response.cookie is not None and ".hero." not in response.cookie
    await site.delivered()
    assert site.viewed() == []


@pytest.mark.parametrize(("method", "status"), [("GET", 404), ("POST", 200), ("GET", 500)])
async def test_other_pages_show_one_variant_and_assign_no_one(method: str, status: int) -> None:
    token = (await Site().get()).cookie
    assert token is not None
    site = Site(status=status)
    for cookie, shown in ((token, {"control": "Plain", "bold": "BOLD"}[expected(HERO, token)]),
                          (None, "Plain")):  # fmt: skip
        response = await site.get(cookie, method=method)
        assert response.start["status"] == status
        assert response.shown() == [shown]  # the visitor's own variant, else the control
        assert response.cookie is None or ".hero." not in response.cookie
    await site.delivered()
    assert site.viewed() == []


async def test_head_of_a_compressed_page_sends_its_start_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coded = gzip.compress(PAGE)
    headers = [(b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(coded))]
    site = Site((b"",), headers=headers, inject=True)  # the tag would have gone in a GET
    response = await site.get(method="HEAD")
    assert response.body == b""
    assert response.header(b"content-length") == b"%d" % len(coded)
    assert response.order.count("http.response.body") == 1
    assert "gzip" not in caplog.text  # no rewriting of a body that was never sent
    # Nothing about the visitor was needed: no cookie, and no Identify sent without one.
    assert response.cookie is None
    assert await site.delivered() == []

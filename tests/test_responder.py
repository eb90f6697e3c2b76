"""The middleware's per-response responder, driven message by message as a server would.

Every ASGI response message type must reach the server: the body with the tag
injected and its length fixed, and ``pathsend`` / ``zerocopysend`` (a file the
server sends itself) after the start unchanged, with nothing injected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from optibase_edge import Conversion, ConversionType, Optibase, OptibaseMiddleware, Test, Variant

pytestmark = pytest.mark.anyio

PAGE = b"<html><head><title>t</title></head><body>hello</body></html>"


def optibase() -> Optibase:
    return Optibase(
        tests=[Test(id="hero", variants=[Variant("a"), Variant("b")], pages=["/*"])],
        conversions=[
            Conversion("signup", ConversionType.CLICK, selector="#signup"),
            Conversion("seen", ConversionType.PAGE_VIEW, url="/*"),
        ],
        secret_keys=["k" * 32],
    )


def scope(path: str = "/page", extensions: dict[str, Any] | None = None) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"site.test"), (b"user-agent", b"Mozilla/5.0")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "extensions": extensions or {},
    }


async def run(app: Any, request_scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request_scope, receive, send)
    return sent


def headers_of(start: Message) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in start["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


def html_start(length: int | None) -> Message:
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


def replaying(*messages: Message) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(message)

    return app


@pytest.mark.parametrize(
    "file_message",
    [
        {"type": "http.response.pathsend", "path": "/srv/page.html"},
        {"type": "http.response.zerocopysend", "file": 3, "count": len(PAGE)},
    ],
)
async def test_a_file_sent_by_the_server_gets_the_start_unchanged(file_message: Message) -> None:
    start = html_start(len(PAGE))
    app = OptibaseMiddleware(replaying(start, file_message), optibase=optibase())
    sent = await run(app, scope())
    assert [m["type"] for m in sent] == ["http.response.start", file_message["type"]]
    headers = headers_of(sent[0])
    assert headers[b"content-length"] == [str(len(PAGE)).encode()]  # nothing was injected
    assert len(headers[b"set-cookie"]) == 1  # a new visitor still gets the cookie
    assert sent[1] == file_message


async def test_a_body_gets_the_tag_and_its_length_fixed_then_trailers_pass() -> None:
    start = html_start(len(PAGE))
    start["trailers"] = True
    messages = (
        start,
        {"type": "http.response.body", "body": PAGE, "more_body": False},
        {"type": "http.response.trailers", "headers": [(b"x-check", b"1")], "more_trailers": False},
    )
    app = OptibaseMiddleware(replaying(*messages), optibase=optibase())
    sent = await run(app, scope())
    assert [m["type"] for m in sent] == [m["type"] for m in messages]
    body = sent[1]["body"]
    assert b"/_optibase/script.js" in body and body.index(b"<script") < body.index(b"</head>")
    assert headers_of(sent[0])[b"content-length"] == [str(len(body)).encode()]
    assert sent[0]["trailers"] is True and sent[2] == messages[2]


async def test_starlette_file_response_over_pathsend(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(PAGE)

    async def view(request: Request) -> FileResponse:
        return FileResponse(page, media_type="text/html")

    site = Starlette(routes=[Route("/page", view)])
    app = OptibaseMiddleware(site, optibase=optibase())
    sent = await run(app, scope(extensions={"http.response.pathsend": {}}))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]
    assert os.path.samefile(sent[1]["path"], page)
    assert headers_of(sent[0])[b"content-length"] == [str(len(PAGE)).encode()]

"""The middleware's per-response responder, driven message by message as a server would.

Every ASGI response message type must reach the server: the body with the tag
injected and its length fixed, and ``pathsend`` / ``zerocopysend`` (a file the
server sends itself) after the start unchanged, with nothing injected. Only a
200 takes the tag; a HEAD takes it as its GET does. What the tag says and what
events record come from the request as it reached the middleware, whatever a
router in the app changes in the scope.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from optibase_edge import Conversion, ConversionType, Optibase, OptibaseMiddleware, Test, Variant
from tests.support.server import serve

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


def scope(
    path: str = "/page",
    extensions: dict[str, Any] | None = None,
    *,
    method: str = "GET",
    root_path: str = "",
    cookie: str | None = None,
) -> Scope:
    headers = [(b"host", b"site.test"), (b"user-agent", b"Mozilla/5.0")]
    if cookie is not None:
        headers.append((b"cookie", f"optibase_vid={cookie}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers,
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
    # The file is sent as it is, so its ETag still describes it: conditional GETs work.
    bare = await run(site, scope(extensions={"http.response.pathsend": {}}))
    assert headers_of(sent[0])[b"etag"] == headers_of(bare[0])[b"etag"]
    # Streamed in chunks instead, it is injected, and the ETag goes with the old length.
    sent = await run(app, scope())
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"/_optibase/script.js" in body
    assert b"etag" not in headers_of(sent[0])
    assert headers_of(sent[0])[b"content-length"] == [str(len(body)).encode()]


def script_src(body: bytes) -> str:
    found = re.search(rb'<script src="([^"]+)" data-optibase-visitor', body)
    assert found is not None, body
    return found.group(1).decode().replace("&amp;", "&")


def cookie_token(start: Message) -> str:
    (cookie,) = headers_of(start)[b"set-cookie"]
    return cookie.decode().split(";")[0].split("=", 1)[1]


async def test_a_streamed_body_with_trailers() -> None:
    start = html_start(len(PAGE))
    start["trailers"] = True
    trailers = {"type": "http.response.trailers", "headers": [(b"x-check", b"1")]}
    chunks = [PAGE[:20], PAGE[20:35], PAGE[35:]]
    messages = (
        start,
        *(
            {"type": "http.response.body", "body": chunk, "more_body": i < 2}
            for i, chunk in enumerate(chunks)
        ),
        trailers,
    )
    app = OptibaseMiddleware(replaying(*messages), optibase=optibase())
    sent = await run(app, scope())
    assert [m["type"] for m in sent] == [m["type"] for m in messages]
    assert b"content-length" not in headers_of(sent[0])  # chunked: the length was redone
    assert sent[0]["trailers"] is True and sent[-1] == trailers
    body = b"".join(m["body"] for m in sent[1:-1])
    assert body.replace(body[body.index(b"<script") : body.index(b"</head>")], b"") == PAGE


PARTIAL = PAGE[:40]


@pytest.mark.parametrize(
    ("status", "length", "extra_headers", "body"),
    [
        (206, len(PARTIAL), [(b"content-range", f"bytes 0-39/{len(PAGE)}".encode())], PARTIAL),
        (304, len(PAGE), [], b""),  # the length of the page it stands for
        (204, None, [], b""),
        (404, len(PAGE), [], PAGE),
        (500, len(PAGE), [], PAGE),
    ],
)
async def test_only_a_200_takes_the_tag(
    status: int, length: int | None, extra_headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    start = html_start(length)
    start["status"] = status
    start["headers"] += [(b"etag", b'"v1"'), *extra_headers]
    messages = (start, {"type": "http.response.body", "body": body})
    app = OptibaseMiddleware(replaying(*messages), optibase=optibase())
    sent = await run(app, scope())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == body
    headers = headers_of(sent[0])
    assert headers.get(b"content-length") == (None if length is None else [str(length).encode()])
    assert all(headers[name] == [value] for name, value in extra_headers)
    assert headers[b"etag"] == [b'"v1"']  # it still describes the body
    assert len(headers[b"set-cookie"]) == 1  # the visitor's cookie and caching, as before
    assert headers[b"cache-control"] == [b"private"]


async def test_head_gets_the_content_length_of_get() -> None:
    async def view(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)  # Starlette sends the body for HEAD too; the server drops it

    app = OptibaseMiddleware(Starlette(routes=[Route("/page", view)]), optibase=optibase())
    first = await run(app, scope())
    token = cookie_token(first[0])
    get = await run(app, scope(cookie=token))
    head = await run(app, scope(method="HEAD", cookie=token))
    length = headers_of(get[0])[b"content-length"]
    assert length == [str(len(get[1]["body"])).encode()] != [str(len(PAGE)).encode()]
    assert headers_of(head[0])[b"content-length"] == length
    assert head[1]["body"] == get[1]["body"]


async def test_head_without_its_body_keeps_the_apps_length(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(PAGE)

    async def view(request: Request) -> FileResponse:
        return FileResponse(page, media_type="text/html")  # sends an empty body for HEAD

    app = OptibaseMiddleware(Starlette(routes=[Route("/page", view)]), optibase=optibase())
    sent = await run(app, scope(method="HEAD"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    # Not the empty body's 0: the file's length (its GET's is longer by the tag, a limit).
    assert headers_of(sent[0])[b"content-length"] == [str(len(PAGE)).encode()]
    assert sent[1]["body"] == b""


def test_head_and_get_on_a_real_server(tmp_path: Path) -> None:
    (tmp_path / "file.html").write_bytes(PAGE)

    async def view(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def file(request: Request) -> FileResponse:
        return FileResponse(tmp_path / "file.html")

    site = Starlette(routes=[Route("/page", view), Route("/file", file)])
    app = OptibaseMiddleware(site, optibase=optibase())
    with serve(app, lifespan="off") as url, httpx2.Client(base_url=url, timeout=5) as client:
        client.get("/page")  # the visitor's cookie, kept by the client
        get, head = client.get("/page"), client.head("/page")
        head_of_file = client.head("/file")
    assert get.headers["content-length"] == str(len(get.content)) != str(len(PAGE))
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.content == b""
    assert head_of_file.headers["content-length"] == str(len(PAGE))


def test_under_a_mount_the_tag_loads_the_script_from_the_apps_root(tmp_path: Path) -> None:
    # Starlette's Mount sets root_path to "/static" in the very scope the middleware holds.
    (tmp_path / "page.html").write_bytes(PAGE)
    site = Starlette(routes=[Mount("/static", app=StaticFiles(directory=tmp_path))])
    app = OptibaseMiddleware(site, optibase=optibase())
    with serve(app, lifespan="off") as url, httpx2.Client(base_url=url, timeout=5) as client:
        src = script_src(client.get("/static/page.html").content)
        script = client.get(src)
    assert src.startswith("/_optibase/script.js?v=")
    assert script.status_code == 200
    assert '"/_optibase/collect"' in script.text


def recording_optibase(tmp_path: Path, page_view_url: str) -> Optibase:
    return Optibase(
        conversions=[
            Conversion("signup", ConversionType.CLICK, selector="#signup"),
            Conversion("seen", ConversionType.PAGE_VIEW, url=page_view_url),
        ],
        secret_keys=["k" * 32],
        events_path=tmp_path / "events.jsonl",
    )


async def page_urls(app: Any, ob: Optibase, request_scope: Scope) -> tuple[list[Message], set[str]]:
    """What *app* sent, and the page URLs of the events recorded (Identify, the page view)."""
    try:
        sent = await run(app, request_scope)
        assert await ob.flush(5.0)
    finally:
        await ob.aclose()
    path = ob.settings.events_path
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(e["type"] for e in events) == ["identify", "track"]
    return sent, {e["context"]["page"]["url"] for e in events}


async def test_under_a_mount_below_a_root_path(tmp_path: Path) -> None:
    async def view(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    ob = recording_optibase(tmp_path, "/static/*")
    site = Starlette(routes=[Mount("/static", routes=[Route("/page", view)])])
    app = OptibaseMiddleware(site, optibase=ob)
    sent, urls = await page_urls(app, ob, scope("/app/static/page", root_path="/app"))
    assert script_src(sent[1]["body"]).startswith("/app/_optibase/script.js?v=")
    assert urls == {"http://site.test/app/static/page"}


async def test_events_record_the_path_asked_for_when_the_app_rewrites_it(tmp_path: Path) -> None:
    async def without_locale(scope: Scope, receive: Receive, send: Send) -> None:
        scope["path"] = scope["path"].removeprefix("/en")  # in place, as some routers do
        await HTMLResponse(PAGE)(scope, receive, send)

    ob = recording_optibase(tmp_path, "/en/*")
    app = OptibaseMiddleware(without_locale, optibase=ob)
    _, urls = await page_urls(app, ob, scope("/en/page"))
    assert urls == {"http://site.test/en/page"}

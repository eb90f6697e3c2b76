"""Script-tag injection: streaming-safe, right length, never twice, only where it belongs."""

from __future__ import annotations

import gzip
import itertools
import re
from pathlib import Path
from typing import Any

import httpx2
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from optibase_edge import Conversion, ConversionType, Optibase, OptibaseMiddleware, Test, Variant
from optibase_edge._injection import HtmlInjector
from tests.support.server import serve

SNIPPET = b"<script src=/_optibase/script.js></script>"
MARKER = b"/_optibase/script.js"


def reference(body: bytes) -> bytes:
    lowered = body.lower()
    positions = [i for i in (lowered.find(b"</head>"), lowered.find(b"</body>")) if i >= 0]
    if not positions:
        return body
    at = min(positions)
    if MARKER in lowered[:at]:
        return body
    return body[:at] + SNIPPET + body[at:]


pieces = st.sampled_from(
    [
        b"<html>",
        b"<head>",
        b"</head>",
        b"</HEAD>",
        b"<body>",
        b"</body>",
        b"</BoDy>",
        b"</he",
        b"ad>",
        b"x",
        b"<p>text</p>",
        b"\xc3\xa9",
        MARKER,
        b"</",
        b"<",
    ]
)


@settings(max_examples=400)
@given(parts=st.lists(pieces, max_size=12), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_any_chunking_gives_the_same_result_as_whole_body(
    parts: list[bytes], cuts: list[int]
) -> None:
    body = b"".join(parts)
    bounds = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    injector = HtmlInjector(SNIPPET, MARKER, length_declared=False)
    out = b"".join(
        injector.feed(chunk, more_body=i < len(chunks) - 1) for i, chunk in enumerate(chunks)
    )
    assert out == reference(body)


def make_app(tmp_path: Path, **settings: Any) -> tuple[Starlette, Optibase]:
    options: dict[str, Any] = {
        "tests": [Test("hero", [Variant("control"), Variant("bold")], pages=["/*"])],
        "conversions": [Conversion("signup", ConversionType.CLICK, selector="#signup")],
        "secret_keys": ["inject" * 8],
        "events_path": tmp_path / "events.jsonl",
    }
    options.update(settings)
    ob = Optibase(**options)
    page = "<html><head><title>t</title></head><body><p>é</p></body></html>"

    async def html(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def fragment(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>no markers here</p>")

    async def compressed(request: Request) -> Response:
        return Response(
            gzip.compress(page.encode()),
            media_type="text/html",
            headers={"content-encoding": "gzip"},
        )

    async def data(request: Request) -> JSONResponse:
        return JSONResponse({"html": "</head>"})

    async def already(request: Request) -> HTMLResponse:
        return HTMLResponse('<head><script src="/_optibase/script.js"></script></head>')

    app = Starlette(
        routes=[
            Route("/html", html),
            Route("/fragment", fragment),
            Route("/gzip", compressed),
            Route("/json", data),
            Route("/already", already),
        ]
    )
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app, ob


def script_tags(text: str) -> list[str]:
    return re.findall(r"<script[^>]*/_optibase/script\.js[^>]*>", text)


def test_html_gets_one_tag_before_head_and_a_correct_length(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        response = client.get("/html")
    (tag,) = script_tags(response.text)
    assert response.text.index(tag) < response.text.index("</head>")
    assert int(response.headers["content-length"]) == len(response.content)
    assert "data-optibase-visitor=" in tag
    assert "&quot;hero&quot;" in tag
    assert "<p>é</p>" in response.text


def test_responses_that_must_not_change_are_left_alone(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        fragment = client.get("/fragment")
        assert fragment.text == "<p>no markers here</p>"
        assert int(fragment.headers["content-length"]) == len(fragment.content)
        zipped = client.get("/gzip")
        assert script_tags(zipped.text) == []  # httpx2 decoded it: still untouched
        assert client.get("/json").json() == {"html": "</head>"}
        assert len(script_tags(client.get("/already").text)) == 1
        head = client.head("/html")
        get = client.get("/html")
        assert head.status_code == 200 and head.content == b""
        assert script_tags(get.text)


def test_two_middlewares_inject_once(tmp_path: Path) -> None:
    app, ob = make_app(tmp_path)
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    with TestClient(app) as client:
        assert len(script_tags(client.get("/html").text)) == 1


def test_csp_nonce_from_a_string_or_a_callable(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, csp_nonce="n0nce")
    with TestClient(app) as client:
        assert 'nonce="n0nce"' in script_tags(client.get("/html").text)[0]

    def from_scope(scope: dict[str, Any]) -> str:
        return f"per-{scope['path'].strip('/')}"

    app, _ = make_app(tmp_path, csp_nonce=from_scope)
    with TestClient(app) as client:
        assert 'nonce="per-html"' in script_tags(client.get("/html").text)[0]


def test_injection_follows_configuration(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, inject_script=False)
    with TestClient(app) as client:
        assert script_tags(client.get("/html").text) == []
    app, _ = make_app(tmp_path, conversions=[], inject_script=None)
    with TestClient(app) as client:
        assert script_tags(client.get("/html").text) == []
    app, _ = make_app(tmp_path, conversions=[], inject_script=True)
    with TestClient(app) as client:
        assert len(script_tags(client.get("/html").text)) == 1


def test_a_streamed_body_with_a_declared_length_is_reframed(tmp_path: Path) -> None:
    ob = Optibase(
        conversions=[Conversion("signup", ConversionType.CLICK, selector="#s")],
        secret_keys=["inject" * 8],
        events_path=tmp_path / "events.jsonl",
    )
    chunks = [
        b"<html><head><ti",
        b"tle>x</title></he",
        b"ad><body>",
        b"y" * 5000,
        b"</body></html>",
    ]

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        total = sum(map(len, chunks))
        headers = [(b"content-type", b"text/html"), (b"content-length", str(total).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < 4})

    app = OptibaseMiddleware(streaming, optibase=ob)
    # A real server: what is under test is how the response is framed on the wire.
    with serve(app, lifespan="off") as url:
        response = httpx2.get(url + "/", timeout=5)
    whole = b"".join(chunks)
    at = whole.index(b"</head>")  # split over two chunks
    (tag,) = script_tags(response.text)
    assert response.content == whole[:at] + tag.encode() + b"</script>" + whole[at:]
    # The declared length no longer holds and the final one is not known when the
    # response starts: the header is dropped, and the server chunks the body.
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"

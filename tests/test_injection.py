"""Script-tag injection: streaming-safe, right length, never twice, only where it belongs."""

from __future__ import annotations

import gzip
import html
import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx2
import pytest
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


def fed(body: bytes, cuts: Iterable[int] = (), snippet: bytes = SNIPPET) -> bytes:
    """*body* through an injector, in chunks cut at *cuts* (one chunk without)."""
    bounds = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    injector = HtmlInjector(snippet, MARKER)
    return b"".join(
        injector.feed(chunk, more_body=i < len(chunks) - 1) for i, chunk in enumerate(chunks)
    )


@settings(max_examples=400)
@given(parts=st.lists(pieces, max_size=12), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_any_chunking_gives_the_same_result_as_whole_body(
    parts: list[bytes], cuts: list[int]
) -> None:
    body = b"".join(parts)
    assert fed(body, cuts) == reference(body)


# -- only a real end tag takes the tag ------------------------------------------------------

# Pieces of a page by what they are to a browser's tokenizer, each whole on its own (no
# piece changes how the next one reads), so that where the tag belongs is known:
# before the first real end tag ("end"), unless the page loads the script before it
# ("loads"). Inside a "hiding" piece the browser sees no tag at all: a comment, the
# text of a script, style, title, textarea or noscript, or template content (where the
# parser ignores </head> and </body>).
PAGE_PIECES = [
    *(
        ("text", piece)
        for piece in [
            b"<!doctype html>",
            b"<html>",
            b"<head>",
            b"<body>",
            b"x",
            b"\xc3\xa9",
            b"a < b && c > d",
            b"<p class=a>text</p>",
            b"<br/>",
            b"<scriptx>",
            b"<titles>",
            b"</script>",
            b"</template>",
            b"-->",
        ]
    ),
    *(
        ("hiding", piece)
        for piece in [
            b"<!-- </head> -->",
            b"<!--</body>-->",
            b"<!---->",
            b"<!-->",
            b"<!--->",
            b"<!-- a --!>",
            b"<!--!></head>-->",
            b"<!-- <!-- </head> -->",
            b'<script>var s = "</head>";</script>',
            b"<SCRIPT type=module>if (a </head> b) {}</SCRIPT >",
            b'<script data-x="a>b">"</body>"</script/>',
            b"<script>'</scripty>' + '</head>'</script>",
            b"<script><!-- <script>'</head>'</script> --></script>",
            b"<script><!--</head>--></script>",
            b"<script><!--></script>",
            b"<script>a <!-- b <script> </head> </script> c --> d</script>",
            b"<script><!-- <script></script></head> --></script>",
            b"<style>/* </head> */</style>",
            b'<style media="a>b"></body></style\t>',
            b"<title></head></title>",
            b"<textarea></body></textarea>",
            b"<noscript></head></noscript>",
            b"<template></head><template></body></template></template>",
            b"<template><script>'</template>'</script></head></template>"
            b"<script data-x=\"</script>\">'</head>'</script>",
            b"<template><!-- </template> --></head></template>",
            b"<title>t</title>",
            b'<script src="a.js" async></script>',
            b"<style>p{}</style>",
            b"<script>" + b"x" * 600 + b"</script>",
        ]
    ),
    *(
        ("end", piece)
        for piece in [b"</head>", b"</HEAD>", b"</body>", b"</BoDy>", b"</head >", b"</body\n>"]
    ),
    ("loads", b'<script src="/_optibase/script.js"></script>'),
    ("loads", b"<!-- /_optibase/script.js -->"),
]


def where_the_tag_goes(parts: list[tuple[str, bytes]]) -> int | None:
    at = 0
    for kind, piece in parts:
        if kind == "loads":
            return None
        if kind == "end":
            return at
        at += len(piece)
    return None


@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(st.sampled_from(PAGE_PIECES), max_size=14),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_the_tag_goes_before_the_first_real_end_tag_however_the_body_is_cut(
    parts: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    body = b"".join(piece for _, piece in parts)
    at = where_the_tag_goes(parts)
    expected = body if at is None else body[:at] + SNIPPET + body[at:]
    assert fed(body) == expected
    assert fed(body, cuts) == expected
    hiding, start = [], 0
    for kind, piece in parts:
        if kind == "hiding":
            hiding.append((start, start + len(piece)))
        start += len(piece)
    assert at is None or not any(a < at < b for a, b in hiding)


TAG = b"{tag}"


@pytest.mark.parametrize(
    "expected",
    [
        b"<head><!-- </head> -->{tag}</head>",
        b"<head><!-->{tag}</head>",
        b"<head><!--->x{tag}</head>",
        b"<head><!--!></head>-->{tag}</head>",
        b"<head><!-- --!>{tag}</head>",
        b"<head><!-- </head>",
        b'<script>a = "</head>"</script>{tag}</head>',
        b"<script>'</head>'</script >{tag}</head>",
        b"<script>'</head>'</SCRIPT/>{tag}</head>",
        b"<script>'</scripts></head>'</script>{tag}</head>",
        b'<script src="x" data-a="1>2"></head></script>{tag}</head>',
        b"<scriptx>{tag}</head>",
        b"<script><!-- w('<script></head></script>') --></script>{tag}</head>",
        b"<script><!--<script></script></head>--></script>{tag}</head>",
        b"<script><!--></script>{tag}</head>",
        b"<style>p::after{content:'</head>'}</style>{tag}</head>",
        b"<title>What is </head>?</title>{tag}</head>",
        b"<textarea></body></textarea>{tag}</body>",
        b"<noscript></head></noscript>{tag}</head>",
        b"<template><template></head></template></body></template>{tag}</head>",
        b"</template>{tag}</head>",
        b"<plaintext></head>",
        b"<head>{tag}</head\n>",
        b"<head></head",
        b"<body><p>hi</p>{tag}</body>",
        b'<script src="/_optibase/script.js"></script></head>',
    ],
)
def test_where_the_tag_goes(expected: bytes) -> None:
    assert fed(expected.replace(TAG, b""), snippet=TAG) == expected


# Tokens to make malformed pages of: bits of markup, and openings of what the scanner follows.
NOISE = st.sampled_from(
    [
        *[b"<", b"</", b"<!--", b"<!", b"-->", b"--!>", b"-", b"!", b">", b"/", b"=", b'"', b"'"],
        *[b" ", b"\n", b"x", b"script", b"head", MARKER],
        *[b"<script", b"<script>", b"</SCRIPT ", b"<Style ", b"</style>", b"<title>"],
        *[b"<textarea/", b"<noscript\n", b"<template>", b"</Template>", b"<plaintext>"],
        *[b"</head", b"</head>", b"</BODY "],
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(st.one_of(NOISE, st.binary(max_size=3)), max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_a_malformed_body_passes_with_at_most_the_tag_added(
    parts: list[bytes], cuts: list[int]
) -> None:
    body = b"".join(parts)
    out = fed(body, cuts)
    assert out == fed(body)
    if out != body:
        (at,) = [i for i in range(len(body) + 1) if out == body[:i] + SNIPPET + body[i:]][:1]
        assert re.match(rb"</(?:head|body)[\t\n\f\r />]", body[at:], re.IGNORECASE)


TRICKY = (
    b"<!doctype html><html><head><title>a</head></title><!-- </head> --><!-->"
    b"<script type=module>'</scr' + '</head>'</script ><style>x</head></style>"
    b"<template><script>'</template>'</script></head></template>"
    b"<script data-x=\"</script>\">'</head>'</script>"
    b"<script><!-- <script>'</head>'</script> --></script></HEAD ><body></body></html>"
)


def test_every_token_may_be_cut_anywhere() -> None:
    expected = TRICKY.replace(b"</HEAD >", SNIPPET + b"</HEAD >")
    assert fed(TRICKY) == expected
    for i in range(len(TRICKY) + 1):
        for j in range(i, min(i + 12, len(TRICKY)) + 1):
            assert fed(TRICKY, [i, j]) == expected, (i, j)


def test_the_script_s_url_after_where_the_tag_goes_does_not_count_however_cut() -> None:
    """Not even in the end tag the tag goes before, while its ">" is still to come."""
    body = b'<head></head data-x="/_optibase/script.js"><body></body>'
    expected = body.replace(b"</head", SNIPPET + b"</head")
    for cut in range(len(body) + 1):
        assert fed(body, [cut]) == expected, cut


def test_a_large_page_in_one_chunk_or_many() -> None:
    """Large bodies take another path through the insertion (one copy, not three)."""
    head = b"<html><head><title>big</title><style>" + b"p{margin:0}" * 4000 + b"</style>"
    body = head + b"</head><body>" + b"<p>text</p>" * 2000 + b"</body></html>"
    expected = head + SNIPPET + body[len(head) :]
    assert len(body) > 64 * 1024
    assert fed(body) == expected
    assert fed(body, range(0, len(body), 4096)) == expected


def test_only_a_few_bytes_wait_for_the_next_chunk() -> None:
    page = (
        b"<html><head><script>"
        + b"var a = 1 < 2;\n" * 700
        + b"</script><style>"
        + b"p{x:y}" * 2000
        + b"</style><!-- "
        + b"- " * 5000
        + b"--><title>"
        + b"t" * 3000
        + b"</title>"
        + b"<p>" * 1000
        + b"</head><body></body></html>"
    )
    injector = HtmlInjector(SNIPPET, MARKER)
    sent = longest_wait = 0
    for i in range(len(page)):
        sent += len(injector.feed(page[i : i + 1], more_body=True))
        longest_wait = max(longest_wait, i + 1 - sent)
    assert longest_wait <= len(MARKER) - 1  # enough to see the script's URL across chunks
    assert sent + len(injector.feed(b"", more_body=False)) == len(page) + len(SNIPPET)


def test_a_tag_too_long_to_wait_for_gives_the_injection_up() -> None:
    page = b'<html><head><script data-x="' + b"a" * 5000 + b'">1</script></head></html>'
    cuts = range(100, len(page), 100)
    assert fed(page) == page.replace(b"</head>", SNIPPET + b"</head>")  # whole: it is seen
    assert fed(page, cuts) == page  # in chunks, it would be held past 4 KiB


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

    async def zstd(request: Request) -> Response:  # not really zstd: it is never read
        return Response(page, media_type="text/html", headers={"content-encoding": "zstd"})

    async def data(request: Request) -> JSONResponse:
        return JSONResponse({"html": "</head>"})

    async def already(request: Request) -> HTMLResponse:
        return HTMLResponse('<head><script src="/_optibase/script.js"></script></head>')

    app = Starlette(
        routes=[
            Route("/html", html),
            Route("/fragment", fragment),
            Route("/gzip", compressed),
            Route("/zstd", zstd),
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


def test_each_visitor_s_tag_names_their_own_id_and_variants(tmp_path: Path) -> None:
    """Tags share cached parts across visitors: each still carries its own ID and variants."""
    app, ob = make_app(tmp_path)
    seen: dict[str, set[str]] = {}
    with TestClient(app) as client:
        for _ in range(40):  # new visitors, then each back once: cold and warm tags
            client.cookies.clear()
            first = client.get("/html")
            again = client.get("/html")
            for response in (first, again):
                (tag,) = script_tags(response.text)
                found = re.search(r'data-optibase-visitor="([^"]+)"', tag)
                data = re.search(r'data-optibase-variants="([^"]+)"', tag)
                assert found is not None and data is not None
                visitor_id = found.group(1)
                token = client.cookies["optibase_vid"]
                record = ob._codec.decode(token)
                assert record is not None and record.visitor_id == visitor_id
                variants = json.loads(html.unescape(data.group(1)))
                assert variants == [{"test_id": "hero", "variant_id": record.assignments["hero"]}]
                seen.setdefault(record.assignments["hero"], set()).add(visitor_id)
    assert set(seen) == {"control", "bold"}


def variants_of(text: str) -> list[dict[str, str]]:
    (tag,) = script_tags(text)
    data = re.search(r'data-optibase-variants="([^"]*)"', tag)
    assert data is not None
    variants: list[dict[str, str]] = json.loads(html.unescape(data.group(1)))
    return variants


@pytest.mark.parametrize("first", ["returning", "newcomer"])
def test_a_page_outside_the_tests_tags_each_visitor_with_their_own_variants(
    tmp_path: Path, first: str
) -> None:
    """On a page no test is on and no view asks for the visitor, the tag still reads the cookie."""
    app, _ = make_app(
        tmp_path, tests=[Test("hero", [Variant("a"), Variant("b")], pages=["/already"])]
    )
    with TestClient(app) as returning, TestClient(app) as newcomer:
        returning.get("/already")  # assigned there: "/html" is on no test's pages
        order = [returning, newcomer] if first == "returning" else [newcomer, returning]
        tags = {id(client): variants_of(client.get("/html").text) for client in order}
        assert [v["test_id"] for v in tags[id(returning)]] == ["hero"]
        assert tags[id(newcomer)] == []


def test_headers_in_any_iterable_are_read(tmp_path: Path) -> None:
    """ASGI allows the scope's headers to be any iterable: a page must not fail over it."""
    app, _ = make_app(tmp_path)

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": iter(list(scope["headers"]))}
        await app(scope, receive, send)

    with TestClient(outer) as client:
        client.get("/html")
        again = client.get("/html")
    assert again.status_code == 200 and "set-cookie" not in again.headers  # the cookie was read
    assert len(script_tags(again.text)) == 1


def test_responses_that_must_not_change_are_left_alone(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        fragment = client.get("/fragment")
        assert fragment.text == "<p>no markers here</p>"
        assert int(fragment.headers["content-length"]) == len(fragment.content)
        assert script_tags(client.get("/zstd").text) == []  # a coding it cannot undo
        assert client.get("/json").json() == {"html": "</head>"}
        assert len(script_tags(client.get("/already").text)) == 1
        head = client.head("/html")
        get = client.get("/html")
        assert head.status_code == 200 and head.content == b""
        assert script_tags(get.text)


def test_a_gzip_page_gets_the_tag_and_is_coded_again(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    with TestClient(app) as client:
        with client.stream("GET", "/gzip") as response:
            raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw)
        assert len(script_tags(gzip.decompress(raw).decode())) == 1


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


PROBE = b'<script type="text/x-probe" id="optibase-probe"></script>'


@pytest.mark.parametrize(
    "html",
    [
        TRICKY,
        b"<html><head><!--!></head>--><noscript></head></noscript></head><body>b</body></html>",
        b"<head><script><!-- <script></script></head> --></script></head><body></body>",
        b"<head><!--></head><body></body>",
        b"<head><title>x</head></title><textarea></head></textarea></head \n><body></body>",
        b"<p>no head<template></body></template><style></body></style></body>",
    ],
)
def test_a_browser_parses_the_page_as_before_plus_the_tag(html: bytes, page: Any) -> None:
    """The tag injected is an element of the document, once, and the page is otherwise as it was."""
    page.set_content(html.decode())
    before = page.evaluate("document.documentElement.outerHTML")
    page.set_content(fed(html, snippet=PROBE).decode())
    found, after = page.evaluate(
        """() => {
            const found = document.querySelectorAll("#optibase-probe");
            found.forEach((element) => element.remove());
            return [found.length, document.documentElement.outerHTML];
        }"""
    )
    assert found == 1
    assert after == before

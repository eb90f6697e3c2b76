"""The same site, end to end, under uvicorn, Hypercorn and Granian.

Each server runs ``tests.support.e2e_site:app`` in a process of its own, and
every test speaks real HTTP to it and reads the Segment calls at a capture
server. One server per kind serves the module; the shutdown test starts its own.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from optibase_edge._cookie import CookieCodec
from tests.support.capture import Messages, SegmentCapture
from tests.support.servers import SERVERS, ServerKind, run_server
from tests.support.user_agents import AS_A_BROWSER

APP = "tests.support.e2e_site:app"
WRITE_KEY = "wk-servers"
SECRET = "servers-e2e-secret-" + "k" * 32
# Which servers offer the ASGI pathsend extension, that Starlette's FileResponse
# then uses: a file sent by path reaches the client as it is on disk.
ADVERTISES_PATHSEND: dict[ServerKind, bool] = {
    "uvicorn": False,
    "hypercorn": False,
    "granian": True,
}
HTML_HEAD = b"<!doctype html><html><head><title>From disk</title></head>"
FILES = {
    "small.html": HTML_HEAD + b"<body><p>A page served from disk.</p></body></html>\n",
    # Over FileResponse's 64 KiB chunks: a server without pathsend gets it in several.
    "large.html": HTML_HEAD + b"<body>" + b"<p>Lorem ipsum dolor sit amet.</p>\n" * 4000,
}
SCRIPT_TAG = re.compile(rb'<script [^>]*src="[^"]*/_optibase/script\.js[^>]*></script>')
ATTRIBUTE = re.compile(rb'([\w-]+)="([^"]*)"')


@dataclass(frozen=True)
class Site:
    kind: ServerKind
    url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def capture() -> Iterator[SegmentCapture]:
    with SegmentCapture(write_key=WRITE_KEY) as received:
        yield received


@pytest.fixture(scope="module", params=SERVERS)
def site(
    request: pytest.FixtureRequest,
    capture: SegmentCapture,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    static = tmp_path_factory.mktemp("static")
    for name, content in FILES.items():
        (static / name).write_bytes(content)
    env = {
        "OPTIBASE_SECRET_KEYS": SECRET,
        "OPTIBASE_SEGMENT_WRITE_KEY": WRITE_KEY,
        "E2E_SEGMENT_ENDPOINT": capture.url,
        "E2E_STATIC_DIR": str(static),
    }
    kind: ServerKind = request.param
    with run_server(kind, APP, env) as url:
        yield Site(kind, url, env)


@pytest.fixture
def client(site: Site) -> Iterator[httpx2.Client]:
    """A browser of its own: a new visitor."""
    with httpx2.Client(base_url=site.url, headers=AS_A_BROWSER, timeout=10) as http:
        yield http


def flush(client: httpx2.Client) -> None:
    """Return once every event the site queued so far is at the capture."""
    assert client.get("/flush").json() == {"flushed": True}


def calls_for(capture: SegmentCapture, visitor_id: str) -> Messages:
    return [m for m in capture.messages if m.get("anonymousId") == visitor_id]


def tracked(messages: Messages, event: str) -> Messages:
    return [m for m in messages if m["type"] == "track" and m["event"] == event]


def shown(page: httpx2.Response) -> tuple[str, str]:
    """The visitor ID and the hero variant the home page rendered."""
    found = re.search(r'data-visitor="([^"]+)" data-variant="([^"]+)"', page.text)
    assert found is not None, page.text
    return found[1], found[2]


def cookie_attributes(response: httpx2.Response) -> set[str]:
    header = response.headers["set-cookie"]
    assert header.startswith("optibase_vid="), header
    return {attribute.strip().lower() for attribute in header.split(";")[1:]}


def visitor_in_cookie(client: httpx2.Client) -> tuple[str, dict[str, str]]:
    record = CookieCodec([SECRET]).decode(client.cookies["optibase_vid"])
    assert record is not None
    return record.visitor_id, dict(record.assignments)


def exposure(messages: Messages, test_id: str) -> dict[str, Any]:
    (viewed,) = [
        m for m in tracked(messages, "Experiment Viewed") if m["properties"]["test_id"] == test_id
    ]
    return viewed


def the_script_tag(body: bytes) -> re.Match[bytes]:
    """The one script tag the middleware injected into *body*."""
    tags = list(SCRIPT_TAG.finditer(body))
    assert len(tags) == 1, body[:2000]
    return tags[0]


def attributes(tag: re.Match[bytes]) -> dict[str, str]:
    return {k.decode(): html.unescape(v.decode()) for k, v in ATTRIBUTE.findall(tag[0])}


# --------------------------------------------------------------------------- pages


def test_the_server_advertises_pathsend_as_known(site: Site, client: httpx2.Client) -> None:
    """The file tests below expect what this says: a server that changes its mind shows here."""
    extensions = client.get("/server").json()["extensions"]
    assert ("http.response.pathsend" in extensions) is ADVERTISES_PATHSEND[site.kind], extensions


def test_a_new_visitor_gets_a_cookie_an_identify_and_one_exposure(
    site: Site, capture: SegmentCapture, client: httpx2.Client
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert {"httponly", "samesite=lax", "path=/"} <= cookie_attributes(page)
    visitor_id, variant = shown(page)
    assert visitor_in_cookie(client) == (visitor_id, {"hero": variant})
    flush(client)

    identify, viewed = calls_for(capture, visitor_id)
    assert identify["type"] == "identify"
    assert viewed["event"] == "Experiment Viewed"
    assert viewed["properties"]["test_id"] == "hero"
    assert viewed["properties"]["variant_id"] == variant
    for call in (identify, viewed):
        assert call["context"]["page"]["url"] == f"{site.url}/"
        assert call["context"]["ip"] == "127.0.0.1"


def test_a_returning_visitor_keeps_the_variant_and_is_exposed_once(
    capture: SegmentCapture, client: httpx2.Client
) -> None:
    first = client.get("/")
    visitor_id, variant = shown(first)
    for _ in range(2):
        again = client.get("/")
        assert "set-cookie" not in again.headers
        assert shown(again) == (visitor_id, variant)
    flush(client)
    calls = calls_for(capture, visitor_id)
    assert [c["type"] for c in calls] == ["identify", "track"]
    assert exposure(calls, "hero")["properties"]["variant_id"] == variant


def test_the_script_tag_is_injected_and_its_src_served(client: httpx2.Client) -> None:
    page = client.get("/")
    body = page.content
    assert int(page.headers["content-length"]) == len(body)
    tag = the_script_tag(body)
    assert body[tag.end() :].startswith(b"</head>")
    visitor_id, variant = shown(page)
    tagged = attributes(tag)
    assert tagged["data-optibase-visitor"] == visitor_id
    assert json.loads(tagged["data-optibase-variants"]) == [
        {"test_id": "hero", "variant_id": variant}
    ]

    script = client.get(tagged["src"])
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert int(script.headers["content-length"]) == len(script.content)
    assert b"optibaseActiveVariants" in script.content


def test_a_page_view_conversion(site: Site, capture: SegmentCapture, client: httpx2.Client) -> None:
    visitor_id, variant = shown(client.get("/"))
    assert client.get("/pricing").status_code == 200
    flush(client)
    (conversion,) = tracked(calls_for(capture, visitor_id), "Conversion Triggered")
    props = conversion["properties"]
    assert (props["conversion_id"], props["conversion_type"]) == ("pricing", "PAGE_VIEW")
    assert props["origin_url"] == f"{site.url}/pricing"
    assert props["variants"] == [{"test_id": "hero", "variant_id": variant}]
    assert conversion["context"]["page"]["url"] == f"{site.url}/pricing"


def test_a_click_beacon_is_a_conversion(
    site: Site, capture: SegmentCapture, client: httpx2.Client
) -> None:
    visitor_id, variant = shown(client.get("/"))
    beacon = client.post(
        "/_optibase/collect",
        json={"type": "click", "conversion_id": "signup", "url": f"{site.url}/", "referrer": ""},
        headers={"origin": site.url, "sec-fetch-site": "same-origin"},
    )
    assert beacon.status_code == 204
    flush(client)
    (conversion,) = tracked(calls_for(capture, visitor_id), "Conversion Triggered")
    props = conversion["properties"]
    assert (props["conversion_id"], props["conversion_type"]) == ("signup", "CLICK")
    assert props["origin_url"] == f"{site.url}/"
    assert props["variants"] == [{"test_id": "hero", "variant_id": variant}]


def test_a_view_assigns_a_test_and_converts(
    site: Site, capture: SegmentCapture, client: httpx2.Client
) -> None:
    bought = client.post("/buy")
    assert bought.status_code == 200
    assert "httponly" in cookie_attributes(bought)
    visitor_id, offer = bought.json()["visitor"], bought.json()["offer"]
    assert offer in ("ten", "twenty")
    flush(client)
    calls = calls_for(capture, visitor_id)
    assert exposure(calls, "offer")["properties"]["variant_id"] == offer
    (conversion,) = tracked(calls, "Conversion Triggered")
    props = conversion["properties"]
    assert (props["conversion_id"], props["conversion_type"]) == ("purchase", "PROGRAMMATIC")
    assert props["origin_url"] == f"{site.url}/buy"
    assert props["variants"] == [{"test_id": "offer", "variant_id": offer}]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", FILES)
def test_an_html_file_response(
    site: Site, capture: SegmentCapture, client: httpx2.Client, name: str
) -> None:
    on_disk = FILES[name]
    response = client.get(f"/files/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert {"httponly", "samesite=lax"} <= cookie_attributes(response)
    body = response.content
    if "content-length" in response.headers:
        assert int(response.headers["content-length"]) == len(body)
    if ADVERTISES_PATHSEND[site.kind]:
        # Sent by path: the server reads the file itself, so it arrives untouched.
        assert body == on_disk
        assert int(response.headers["content-length"]) == len(on_disk)
    else:
        # Streamed through the middleware: the tag goes in once, before </head>.
        tag = the_script_tag(body)
        assert body[: tag.start()] + body[tag.end() :] == on_disk
        assert body[tag.end() :].startswith(b"</head>")

    visitor_id, assignments = visitor_in_cookie(client)
    flush(client)
    viewed = exposure(calls_for(capture, visitor_id), "hero")
    assert viewed["properties"]["variant_id"] == assignments["hero"]
    assert viewed["context"]["page"]["url"] == f"{site.url}/files/{name}"


@pytest.mark.parametrize("path", ["/", "/files/small.html"])
def test_head_declares_the_length_get_sends(site: Site, client: httpx2.Client, path: str) -> None:
    client.get(path)  # now a returning visitor: neither response sets a cookie
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert "content-length" in got.headers
    if path == "/" or ADVERTISES_PATHSEND[site.kind]:
        assert head.headers.get("content-length") == got.headers["content-length"]
    else:
        # The documented limit: a FileResponse answers HEAD without its body, so there
        # is nothing to inject, and the HEAD keeps the file's length, not its GET's.
        on_disk = FILES[path.rsplit("/", 1)[1]]
        assert head.headers.get("content-length") == str(len(on_disk))
        assert int(got.headers["content-length"]) > len(on_disk)


# --------------------------------------------------------------------------- shutdown


def test_sigterm_flushes_what_is_queued(site: Site, capture: SegmentCapture) -> None:
    """Events still queued when the server is told to stop reach Segment before it exits."""
    # A batch would wait a minute to fill: only the lifespan shutdown's flush sends it.
    env = {**site.env, "E2E_FLUSH_INTERVAL": "60"}
    with (
        run_server(site.kind, APP, env) as url,
        httpx2.Client(base_url=url, headers=AS_A_BROWSER, timeout=10) as http,
    ):
        visitor_id, variant = shown(http.get("/"))
        stats = http.get("/stats").json()
        assert (stats["pending"], stats["sent"]) == (2, 0)
    # The server has exited: what it flushed on the way out is at the capture already.
    calls = calls_for(capture, visitor_id)
    assert [c["type"] for c in calls] == ["identify", "track"]
    assert exposure(calls, "hero")["properties"]["variant_id"] == variant

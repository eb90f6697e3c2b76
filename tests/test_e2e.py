"""End to end over real HTTP: the site under uvicorn, Segment calls to a capture server."""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Route

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._cookie import CookieCodec
from tests.support.capture import SegmentCapture
from tests.support.server import serve
from tests.support.user_agents import AS_A_BROWSER

WRITE_KEY = "wk-e2e"
SECRET = "e2e-secret-" + "k" * 32


def build_site(segment_endpoint: str, **settings: Any) -> tuple[Starlette, Optibase]:
    ob = Optibase(
        tests=[
            Test("hero", [Variant("control"), Variant("bold")], pages=["/"]),
            Test("footer", [Variant("plain"), Variant("fancy")], pages=["/"]),
            Test("later", [Variant("a"), Variant("b")], pages=["/elsewhere"]),
        ],
        conversions=[
            Conversion("pricing", ConversionType.PAGE_VIEW, url="/pricing"),
            Conversion("purchase", ConversionType.PROGRAMMATIC),
            Conversion("upgrade", ConversionType.PROGRAMMATIC, one_per_visitor=True),
        ],
        secret_keys=[SECRET],
        segment_write_key=WRITE_KEY,
        segment_endpoint=segment_endpoint,
        flush_interval=0.05,
        **settings,
    )

    async def home(request: Request) -> HTMLResponse:
        visitor = get_visitor(request)
        return HTMLResponse(f"<h1 data-variant='{visitor.variant('hero')}'>{visitor.id}</h1>")

    async def pricing(request: Request) -> HTMLResponse:
        return HTMLResponse("<h1>Pricing</h1>")

    async def buy(request: Request) -> RedirectResponse:
        await get_visitor(request).convert("purchase")
        return RedirectResponse("/thanks", status_code=303)

    async def upgrade(request: Request) -> JSONResponse:
        await get_visitor(request).convert("upgrade")
        return JSONResponse({"ok": True})

    async def flush(request: Request) -> JSONResponse:
        return JSONResponse({"flushed": await ob.flush(timeout=5), "stats": ob.stats()})

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/pricing", pricing),
            Route("/buy", buy, methods=["POST"]),
            Route("/thanks", pricing),
            Route("/upgrade", upgrade, methods=["POST"]),
            Route("/flush", flush),
        ]
    )
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app, ob


@pytest.fixture
def capture() -> Iterator[SegmentCapture]:
    with SegmentCapture(write_key=WRITE_KEY) as received:
        yield received


@pytest.fixture
def site(capture: SegmentCapture) -> Iterator[tuple[SegmentCapture, httpx2.Client]]:
    app, _ = build_site(capture.url)
    with serve(app) as url, httpx2.Client(base_url=url, headers=AS_A_BROWSER) as client:
        yield capture, client


def flush(client: httpx2.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/flush").json()
    assert result["flushed"] is True
    return result


def visitor_from_cookie(client: httpx2.Client) -> str:
    record = CookieCodec([SECRET]).decode(client.cookies["optibase_vid"])
    assert record is not None
    return record.visitor_id


def of_kind(messages: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("event") == event]


def test_new_visitor_gets_identify_then_one_exposure_per_test(
    site: tuple[SegmentCapture, httpx2.Client],
) -> None:
    received, client = site
    response = client.get("/", headers={"user-agent": "e2e-agent", "accept-language": "fr-CH"})
    assert response.status_code == 200
    visitor_id = visitor_from_cookie(client)
    assert visitor_id in response.text
    flush(client)

    messages = received.wait_for(lambda m: len(m) == 3, "3 messages")
    identify, *tracks = messages
    assert identify["type"] == "identify"
    assert identify["anonymousId"] == visitor_id
    assert "userId" not in identify
    context = identify["context"]
    assert context["ip"] == "127.0.0.1"
    assert context["userAgent"] == "e2e-agent"
    assert context["locale"] == "fr-CH"
    assert context["page"]["path"] == "/"
    assert context["library"]["name"] == "optibase-edge"

    exposures = {m["properties"]["test_id"]: m for m in tracks}
    assert set(exposures) == {"hero", "footer"}
    shown = response.text.split("data-variant='")[1].split("'")[0]
    hero = exposures["hero"]
    assert hero["event"] == "Experiment Viewed"
    assert hero["anonymousId"] == visitor_id
    assert hero["properties"]["variant_id"] == shown
    assert hero["properties"]["experiment_id"] == "hero"
    assert hero["properties"]["variation_id"] == shown
    for message in messages:
        assert len(message["messageId"]) <= 100
        assert datetime.fromisoformat(message["timestamp"]).utcoffset() is not None


def test_returning_visitor_sends_nothing_again(site: tuple[SegmentCapture, httpx2.Client]) -> None:
    received, client = site
    first = client.get("/")
    flush(client)
    before = len(received.wait_for(lambda m: len(m) == 3, "3 messages"))
    for _ in range(3):
        again = client.get("/")
        assert "set-cookie" not in again.headers
        assert again.text == first.text
    flush(client)
    assert len(received.messages) == before


def test_page_view_conversion_carries_variants_and_campaign(
    site: tuple[SegmentCapture, httpx2.Client],
) -> None:
    received, client = site
    home = client.get("/")
    shown = home.text.split("data-variant='")[1].split("'")[0]
    client.get("/pricing?utm_source=newsletter&utm_campaign=autumn", headers={"referer": "x"})
    client.get("/pricing-missing")  # a 404 is not a page view
    flush(client)
    conversions = of_kind(received.messages, "Conversion Triggered")
    assert len(conversions) == 1
    (conversion,) = conversions
    props = conversion["properties"]
    assert props["conversion_id"] == "pricing"
    assert props["conversion_type"] == "PAGE_VIEW"
    assert props["origin_url"].endswith("/pricing?utm_source=newsletter&utm_campaign=autumn")
    assert {"test_id": "hero", "variant_id": shown} in props["variants"]
    assert conversion["context"]["campaign"] == {"source": "newsletter", "name": "autumn"}
    assert conversion["context"]["page"]["search"] == "?utm_source=newsletter&utm_campaign=autumn"


def test_programmatic_and_one_per_visitor_conversions(
    site: tuple[SegmentCapture, httpx2.Client],
) -> None:
    received, client = site
    client.get("/")
    assert client.post("/buy").status_code == 303
    assert client.post("/buy").status_code == 303
    for _ in range(2):
        assert client.post("/upgrade").status_code == 200
    flush(client)
    conversions = of_kind(received.messages, "Conversion Triggered")
    ids = sorted(c["properties"]["conversion_id"] for c in conversions)
    assert ids == ["purchase", "purchase", "upgrade"]
    assert all(c["properties"]["conversion_type"] == "PROGRAMMATIC" for c in conversions)
    purchases = [c for c in conversions if c["properties"]["conversion_id"] == "purchase"]
    assert purchases[0]["messageId"] != purchases[1]["messageId"]


def test_batches_use_basic_auth_and_gzip(site: tuple[SegmentCapture, httpx2.Client]) -> None:
    received, client = site
    client.get("/")
    flush(client)
    received.wait_for(lambda m: len(m) >= 3, "3 messages or more")
    expected = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert received.bad_auth == 0  # the capture refuses (and does not record) any other
    for request in received.requests:
        assert request.headers["authorization"] == expected
        assert request.headers["content-encoding"] == "gzip"
        assert request.headers["content-type"] == "application/json"
        assert gzip.decompress(request.raw)  # really gzip, not merely labelled
        assert datetime.fromisoformat(request.body["sentAt"]).utcoffset() is not None


def test_tampered_cookie_becomes_a_new_visitor(site: tuple[SegmentCapture, httpx2.Client]) -> None:
    received, client = site
    client.get("/")
    original = visitor_from_cookie(client)
    token = client.cookies["optibase_vid"]
    client.cookies.clear()
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    client.cookies.set("optibase_vid", tampered, domain="127.0.0.1")
    response = client.get("/")
    assert response.status_code == 200
    assert "set-cookie" in response.headers
    fresh = visitor_from_cookie(client)
    assert fresh != original
    flush(client)
    identified = [m["anonymousId"] for m in received.messages if m["type"] == "identify"]
    assert identified == [original, fresh]


def test_eu_region_posts_to_the_eu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx2.Request] = []

    async def handle(self: httpx2.AsyncHTTPTransport, request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={"success": True})

    # httpx2's network layer answers in memory: the URL the real client builds is
    # what is under test here, and no test may reach a public host.
    monkeypatch.setattr(httpx2.AsyncHTTPTransport, "handle_async_request", handle)

    async def run() -> None:
        ob = Optibase(
            conversions=[Conversion("purchase", ConversionType.PROGRAMMATIC)],
            secret_keys=[SECRET],
            segment_write_key="eu-key",
            segment_region="eu",
        )
        await ob.convert("purchase", visitor_id="v-1")
        assert await ob.flush(timeout=5)
        await ob.aclose()

    asyncio.run(run())
    assert [str(r.url) for r in seen] == ["https://events.eu1.segmentapis.com/v1/batch"]
    assert Optibase(secret_keys=[SECRET], segment_write_key="x").settings.segment_base_url == (
        "https://api.segment.io"
    )

"""The /_optibase endpoints: hostile input gets a short 4xx and produces no event."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from optibase_edge import Conversion, ConversionType, Optibase, OptibaseMiddleware, Test, Variant
from optibase_edge._endpoints import MAX_BODY_BYTES

PAGE = "http://testserver/landing"


def make_site(events: Path) -> tuple[Starlette, Optibase]:
    ob = Optibase(
        tests=[Test("hero", [Variant("control"), Variant("bold")], pages=["/landing"])],
        conversions=[
            Conversion("signup", ConversionType.CLICK, selector="#signup", one_per_visitor=True),
            Conversion("cta", ConversionType.CLICK, selector=".cta"),
            Conversion("newsletter", ConversionType.PROGRAMMATIC, from_browser=True),
            Conversion("purchase", ConversionType.PROGRAMMATIC),
            Conversion("pricing", ConversionType.PAGE_VIEW, url="/pricing"),
        ],
        secret_keys=["collector-secret-0123456789abcdef"],
        events_path=events,
    )

    async def landing(request: Request) -> HTMLResponse:
        return HTMLResponse("<html><head></head><body><a id=signup>go</a></body></html>")

    app = Starlette(routes=[Route("/landing", landing)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app, ob


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


@pytest.fixture
def site(events: Path) -> Iterator[tuple[TestClient, Optibase]]:
    app, ob = make_site(events)
    with TestClient(app) as test_client:
        yield test_client, ob


@pytest.fixture
def client(site: tuple[TestClient, Optibase]) -> TestClient:
    return site[0]


@pytest.fixture
def conversions(site: tuple[TestClient, Optibase], events: Path) -> Callable[[], list[Any]]:
    """Conversion events written so far, after flushing in the app's own loop."""
    test_client, ob = site

    def read() -> list[dict[str, Any]]:
        assert test_client.portal is not None
        test_client.portal.call(ob.flush, 5)
        if not events.exists():
            return []
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        return [e for e in lines if e.get("event") == "Conversion Triggered"]

    return read


def beacon(
    client: TestClient,
    body: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    payload = {"type": "click", "conversion_id": "signup", "url": PAGE, "referrer": ""}
    if body is not None:
        payload = body
    data = content if content is not None else json.dumps(payload).encode()
    return client.post(
        "/_optibase/collect",
        content=data,
        headers={"content-type": "application/json", **(headers or {})},
    )


def test_a_click_from_a_known_visitor_is_recorded_once_per_visitor(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    client.get("/landing")
    assert beacon(client).status_code == 204
    assert beacon(client).status_code == 204
    found = conversions()
    assert len(found) == 1
    props = found[0]["properties"]
    assert props["conversion_id"] == "signup"
    assert props["conversion_type"] == "CLICK"
    assert props["origin_url"] == PAGE
    assert props["variants"][0]["test_id"] == "hero"
    assert found[0]["context"]["page"]["url"] == PAGE


def test_repeatable_clicks_are_all_recorded(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    client.get("/landing")
    for _ in range(3):
        assert (
            beacon(client, {"type": "click", "conversion_id": "cta", "url": PAGE}).status_code
            == 204
        )
    assert len(conversions()) == 3


def test_browser_side_programmatic_conversion(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    client.get("/landing")
    body = {"type": "conversion", "conversion_id": "newsletter", "url": PAGE}
    assert beacon(client, body).status_code == 204
    (found,) = conversions()
    assert found["properties"]["conversion_type"] == "PROGRAMMATIC"


def test_a_server_side_conversion_is_refused_from_the_browser(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    client.get("/landing")
    refused = beacon(client, {"type": "conversion", "conversion_id": "purchase", "url": PAGE})
    assert refused.status_code == 403
    assert refused.json() == {"error": "conversion 'purchase' is not fired from the browser"}
    assert conversions() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"type": "click", "conversion_id": "nope", "url": PAGE}, 404),
        ({"type": "click", "conversion_id": "newsletter", "url": PAGE}, 400),
        ({"type": "conversion", "conversion_id": "signup", "url": PAGE}, 400),
        ({"type": "click", "conversion_id": "pricing", "url": PAGE}, 400),
        ({"type": "view", "conversion_id": "signup", "url": PAGE}, 400),
        ({"type": "click", "conversion_id": "", "url": PAGE}, 400),
        ({"type": "click", "conversion_id": 7, "url": PAGE}, 400),
        ({"type": "click", "conversion_id": "signup"}, 400),
        ({"type": "click", "conversion_id": "signup", "url": "https://evil.example/x"}, 400),
        ({"type": "click", "conversion_id": "signup", "url": "javascript:alert(1)"}, 400),
        ({"type": "click", "conversion_id": "signup", "url": PAGE, "referrer": 5}, 400),
        (["click"], 400),
        ("click", 400),
    ],
)
def test_bad_bodies_are_refused_without_an_event(
    client: TestClient, conversions: Callable[[], list[Any]], body: Any, status: int
) -> None:
    client.get("/landing")
    response = beacon(client, body)
    assert response.status_code == status
    assert "error" in response.json()
    assert conversions() == []


def test_malformed_json_wrong_type_oversize(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    client.get("/landing")
    assert beacon(client, content=b"{not json").status_code == 400
    assert beacon(client, content=b"\xff\xfe").status_code == 400
    text = client.post("/_optibase/collect", content=b"{}", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    big = json.dumps(
        {"type": "click", "conversion_id": "signup", "url": PAGE, "x": "a" * MAX_BODY_BYTES}
    )
    assert beacon(client, content=big.encode()).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        for _ in range(20):
            yield b" " * 1024

    streamed = client.post(
        "/_optibase/collect", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert client.get("/_optibase/collect").status_code == 405
    assert conversions() == []


def test_missing_or_forged_cookie_is_forbidden(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    assert beacon(client).status_code == 403  # never seen the site: no cookie
    client.cookies.set("optibase_vid", "WyJmb3JnZWQiXQ.forged")
    assert beacon(client).status_code == 403
    assert conversions() == []


def test_cross_site_requests_are_forbidden(
    client: TestClient, conversions: Callable[[], list[Any]]
) -> None:
    client.get("/landing")
    assert beacon(client, headers={"origin": "https://evil.example"}).status_code == 403
    assert beacon(client, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert beacon(client, headers={"origin": "http://testserver"}).status_code == 204
    assert len(conversions()) == 1


def test_variants_endpoint_reports_the_cookie_visitor(client: TestClient) -> None:
    page = client.get("/landing")
    assert page.status_code == 200
    data = client.get("/_optibase/variants").json()
    assert set(data) == {"visitor_id", "variants"}
    assert data["variants"][0]["test_id"] == "hero"
    assert data["visitor_id"] in page.text  # the injected tag carries the same id


def test_script_is_cacheable_and_configured(client: TestClient) -> None:
    response = client.get("/_optibase/script.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert "#signup" in response.text and "__OPTIBASE_CONFIG__" not in response.text
    etag = response.headers["etag"]
    again = client.get("/_optibase/script.js", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert client.get("/_optibase/nothing").status_code == 404


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


# What the test site's conversions accept: {conversion_id: (beacon type, one per visitor)}.
BEACONS = {"signup": ("click", True), "cta": ("click", False), "newsletter": ("conversion", False)}
OTHER_CONVERSIONS = {"pricing"}  # a PAGE_VIEW: no beacon type fits it
SERVER_ONLY = {"purchase"}  # PROGRAMMATIC without from_browser: the collector refuses it


def expected_status(body: bytes, content_type: str) -> int:
    """The collector's answer to a beacon from a known visitor, read off its contract."""
    if content_type.split(";")[0].strip() != "application/json":
        return 415
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return 400
    if not isinstance(data, dict) or data.get("type") not in ("click", "conversion"):
        return 400
    conversion_id, url = data.get("conversion_id"), data.get("url")
    if not isinstance(conversion_id, str) or not conversion_id or not on_this_site(url):
        return 400
    if not isinstance(data.get("referrer", ""), str):
        return 400
    if conversion_id in OTHER_CONVERSIONS:
        return 400
    if conversion_id in SERVER_ONLY:
        return 403 if data["type"] == "conversion" else 400
    if conversion_id not in BEACONS:
        return 404
    return 204 if BEACONS[conversion_id][0] == data["type"] else 400


URLS = [PAGE, "https://testserver/pricing?x=1", "http://other/x", "", "http://[::1"]


def json_body(kind: str, conversion_id: str) -> bytes:
    return json.dumps({"type": kind, "conversion_id": conversion_id, "url": PAGE}).encode()


def on_this_site(url: Any) -> bool:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return False
    return parts is not None and parts.scheme in ("http", "https") and parts.netloc == "testserver"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(["click", "conversion", "other"]) | json_values,
                "conversion_id": st.sampled_from(
                    ["signup", "cta", "newsletter", "purchase", "pricing", "x"]
                )
                | json_values,
                "url": st.sampled_from(URLS) | json_values,
            },
            optional={"referrer": json_values},
        ).map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/json; charset=utf-8"]
    ),
)
@example(body=json_body("click", "cta"), content_type="application/json")
@example(body=json_body("conversion", "newsletter"), content_type="application/json")
@example(body=json_body("click", "x"), content_type="application/json; charset=utf-8")
@example(body=json_body("conversion", "cta"), content_type="application/json")
@example(body=json_body("click", "pricing"), content_type="application/json")
@example(body=json_body("conversion", "purchase"), content_type="application/json")
@example(body=json_body("click", "purchase"), content_type="application/json")
def test_any_input_gets_its_4xx_or_a_recorded_204_and_nothing_fails(
    client: TestClient,
    conversions: Callable[[], list[Any]],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
) -> None:
    client.get("/landing")
    before = len(conversions())
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="optibase_edge"):
        response = client.post(
            "/_optibase/collect", content=body, headers={"content-type": content_type}
        )
    after = len(conversions())
    # The collector turns an exception into a 400: a logged error is a bug, whatever the status.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert response.status_code == expected_status(body, content_type), response.text
    if response.status_code != 204:
        assert after == before
    elif BEACONS[json.loads(body)["conversion_id"]][1]:
        assert after - before <= 1  # one per visitor: it may be recorded already
    else:
        assert after - before == 1


@pytest.mark.parametrize("kind", [[], {}, ["click"]])
def test_a_list_or_object_type_is_refused_cleanly(
    client: TestClient, caplog: pytest.LogCaptureFixture, kind: Any
) -> None:
    client.get("/landing")
    with caplog.at_level(logging.ERROR, logger="optibase_edge"):
        response = beacon(client, {"type": kind, "conversion_id": "cta", "url": PAGE})
    assert response.status_code == 400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_endpoints_work_for_an_app_mounted_under_a_root_path(events: Path) -> None:
    inner, ob = make_site(events)
    outer = Starlette(routes=[Mount("/shop", app=inner)])
    with TestClient(outer) as client:
        page = client.get("/shop/landing")
        src = re.search(r'src="([^"]+)"', page.text)
        assert src is not None and src.group(1).startswith("/shop/_optibase/script.js?v=")
        script = client.get(src.group(1).replace("&amp;", "&"))
        assert script.status_code == 200
        assert '"/shop/_optibase/collect"' in script.text
        url = "http://testserver/shop/landing"
        body = {"type": "click", "conversion_id": "cta", "url": url}
        response = client.post("/shop/_optibase/collect", json=body)
        assert response.status_code == 204
        assert client.portal is not None
        assert client.portal.call(ob.flush, 5)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    (click,) = [e for e in lines if e.get("event") == "Conversion Triggered"]
    assert click["properties"]["origin_url"] == url

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
from starlette.types import Message

from optibase_edge import Conversion, ConversionType, Optibase, OptibaseMiddleware, Test, Variant
from optibase_edge._cookie import new_visitor_id
from optibase_edge._endpoints import MAX_BODY_BYTES

PAGE = "http://testserver/landing"
UNLIMITED = {"collector_visitor_budget": None, "collector_ip_budget": None}


def make_site(events: Path, **settings: Any) -> tuple[Starlette, Optibase]:
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
        **settings,
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
def site_settings() -> dict[str, Any]:
    """Settings of the test site beyond make_site's (a test parametrizes it to change them)."""
    return {}


@pytest.fixture
def site(events: Path, site_settings: dict[str, Any]) -> Iterator[tuple[TestClient, Optibase]]:
    app, ob = make_site(events, **site_settings)
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
    # Another site's page may make the request, never read the answer: no CORS, ever.
    for path in ("/_optibase/variants", "/_optibase/collect"):
        answer = client.request("OPTIONS", path, headers={"origin": "https://evil.example"})
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        answer = client.get(path, headers={"origin": "https://evil.example"})
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


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


URLS = [
    PAGE,
    "https://testserver/pricing?x=1",
    "http://testserver/pricing?x=1",
    "http://other/x",
    "",
    "http://[::1",
]


def json_body(kind: str, conversion_id: str) -> bytes:
    return json.dumps({"type": kind, "conversion_id": conversion_id, "url": PAGE}).encode()


def on_this_site(url: Any) -> bool:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return False
    return parts is not None and parts.scheme == "http" and parts.netloc == "testserver"


@pytest.mark.parametrize("site_settings", [UNLIMITED])  # the budgets are tested on their own
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


# -- budgets: a visitor, and an address, may post so much and no more ------------------------


def signed_cookie(ob: Optibase) -> tuple[str, str]:
    """A new visitor's ID, and a ``Cookie`` header that proves it."""
    visitor_id = new_visitor_id()
    return visitor_id, f"optibase_vid={ob._codec.encode(visitor_id, {})}"


def click(client: TestClient, cookie: str, **headers: str) -> Any:
    body = {"type": "click", "conversion_id": "cta", "url": PAGE}
    return beacon(client, body, headers={"cookie": cookie, **headers})


def test_the_default_budgets_take_a_persons_burst_and_stop_a_script(
    site: tuple[TestClient, Optibase], conversions: Callable[[], list[Any]]
) -> None:
    client, ob = site
    assert ob.settings.collector_visitor_budget == (20, 1.0)
    assert ob.settings.collector_ip_budget == (500, 20.0)  # many people behind one NAT
    _, cookie = signed_cookie(ob)
    statuses = [click(client, cookie).status_code for _ in range(60)]
    assert statuses[:20] == [204] * 20
    assert statuses.count(429) >= 30  # 60 posts take well under 10 s, at a token a second
    assert len(conversions()) == statuses.count(204)


@pytest.mark.parametrize(
    "site_settings", [{"collector_visitor_budget": (2, 0.25), "collector_ip_budget": None}]
)
def test_a_visitor_past_its_budget_gets_429_with_retry_after_and_records_nothing(
    site: tuple[TestClient, Optibase], conversions: Callable[[], list[Any]]
) -> None:
    client, ob = site
    _, cookie = signed_cookie(ob)
    assert [click(client, cookie).status_code for _ in range(2)] == [204, 204]
    refused = click(client, cookie)
    assert refused.status_code == 429
    assert refused.json() == {"error": "too many beacons from this visitor"}
    # A token takes 4 s to come back (0.25 a second): Retry-After says so, in whole seconds.
    assert refused.headers["retry-after"] == "4"
    assert len(conversions()) == 2
    other_id, other = signed_cookie(ob)
    assert click(client, other).status_code == 204  # each visitor has a budget of their own
    assert conversions()[-1]["anonymousId"] == other_id


@pytest.mark.parametrize(
    "site_settings", [{"collector_visitor_budget": (2, 0.001), "collector_ip_budget": None}]
)
def test_only_a_beacon_that_would_record_spends_the_visitors_budget(
    site: tuple[TestClient, Optibase], conversions: Callable[[], list[Any]]
) -> None:
    client, ob = site
    _, cookie = signed_cookie(ob)
    refused_anyway = [
        ({"type": "click", "conversion_id": "cta", "url": "https://evil.example/"}, {}, 400),
        ({"type": "click", "conversion_id": "nope", "url": PAGE}, {}, 404),
        ({"type": "conversion", "conversion_id": "purchase", "url": PAGE}, {}, 403),
        ({"type": "click", "conversion_id": "cta", "url": PAGE}, {"origin": "null"}, 403),
    ]
    for body, headers, status in refused_anyway * 5:
        response = beacon(client, body, headers={"cookie": cookie, **headers})
        assert response.status_code == status
    assert beacon(client, content=b"[" * 8000, headers={"cookie": cookie}).status_code == 400
    assert [click(client, cookie).status_code for _ in range(3)] == [204, 204, 429]
    assert len(conversions()) == 2


@pytest.mark.parametrize(
    "site_settings", [{"collector_visitor_budget": None, "collector_ip_budget": (3, 0.001)}]
)
def test_an_address_past_its_budget_gets_429_even_for_junk(
    site: tuple[TestClient, Optibase], conversions: Callable[[], list[Any]]
) -> None:
    client, ob = site
    _, cookie = signed_cookie(ob)
    for _ in range(3):
        assert beacon(client, content=b"{not json", headers={"cookie": cookie}).status_code == 400
    # Charged before the body is parsed: junk spends the address's budget, and past it, junk
    # costs no parsing (429, not 400), as a real beacon from any visitor there costs nothing.
    junk = beacon(client, content=b"{not json", headers={"cookie": cookie})
    assert junk.status_code == 429
    assert junk.json() == {"error": "too many beacons from this address"}
    assert int(junk.headers["retry-after"]) >= 999
    assert click(client, signed_cookie(ob)[1]).status_code == 429
    assert conversions() == []


@pytest.mark.parametrize(
    "site_settings", [{"collector_visitor_budget": None, "collector_ip_budget": (1, 0.001)}]
)
def test_the_address_budget_is_charged_before_the_body_is_read(
    site: tuple[TestClient, Optibase],
) -> None:
    client, ob = site
    app = client.app
    _, cookie = signed_cookie(ob)
    assert click(client, cookie).status_code == 204  # the one token of "testclient"
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": json.dumps({"type": "click"}).encode()}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
    scope = {
        "type": "http", "method": "POST", "path": "/_optibase/collect", "root_path": "",
        "raw_path": b"/_optibase/collect", "query_string": b"", "headers": headers,
        "client": ("testclient", 50000), "server": ("testserver", 80), "scheme": "http",
        "http_version": "1.1",
    }  # fmt: skip
    assert client.portal is not None
    client.portal.call(app, scope, receive, send)
    assert sent[0]["status"] == 429
    assert reads == 0


@pytest.mark.parametrize(
    "site_settings", [{"collector_visitor_budget": None, "collector_ip_budget": (2, 0.001)}]
)
def test_requests_no_page_of_this_site_could_send_spend_no_budget(
    site: tuple[TestClient, Optibase], conversions: Callable[[], list[Any]]
) -> None:
    # Another site's page can make its visitors' browsers post here, with their addresses:
    # those posts must not use up the budget of the address (or the visitor) they come from.
    client, ob = site
    _, cookie = signed_cookie(ob)
    for _ in range(5):
        assert click(client, cookie, origin="https://evil.example").status_code == 403
        assert click(client, cookie, **{"sec-fetch-site": "cross-site"}).status_code == 403
        text = client.post(
            "/_optibase/collect", content=b"{}", headers={"content-type": "text/plain"}
        )
        assert text.status_code == 415
        assert client.get("/_optibase/collect").status_code == 405
    assert [click(client, cookie).status_code for _ in range(3)] == [204, 204, 429]
    assert len(conversions()) == 2


def test_the_address_is_the_client_the_trusted_proxies_vouch_for(events: Path) -> None:
    app, ob = make_site(
        events,
        collector_visitor_budget=None,
        collector_ip_budget=(2, 0.001),
        trusted_proxies=["127.0.0.1/32"],
    )
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        _, cookie = signed_cookie(ob)
        alice = {"x-forwarded-for": "203.0.113.7"}
        assert [click(client, cookie, **alice).status_code for _ in range(3)] == [204, 204, 429]
        # Another client behind the same proxy has a budget of its own, and a hop the
        # client wrote itself (left of the one the proxy appended) changes nothing.
        assert click(client, cookie, **{"x-forwarded-for": "198.51.100.2"}).status_code == 204
        spoofed = {"x-forwarded-for": "192.0.2.1, 203.0.113.7"}
        assert click(client, cookie, **spoofed).status_code == 429


def test_behind_a_proxy_not_trusted_every_client_shares_its_budget_and_a_warning_says_so(
    events: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, ob = make_site(events, collector_visitor_budget=None, collector_ip_budget=(2, 0.001))
    with TestClient(app, client=("10.0.0.5", 50000)) as client:
        _, cookie = signed_cookie(ob)
        with caplog.at_level(logging.WARNING, logger="optibase_edge"):
            statuses = [
                click(client, cookie, **{"x-forwarded-for": f"203.0.113.{i}"}).status_code
                for i in range(10)
            ]
    assert statuses == [204, 204] + [429] * 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # rate-limited: one for eight refusals
    assert "10.0.0.5" in warnings[0] and "trusted_proxies" in warnings[0]


# -- hostile bodies: a clean 400, and no traceback in the log ---------------------------------


DEEP = [
    b"[" * MAX_BODY_BYTES,
    b"[" * 4000 + b"]" * 4000,
    b'{"a":' * 1600,
    b'{"a":' * 1300 + b"1" + b"}" * 1300,
]


@pytest.mark.parametrize("site_settings", [UNLIMITED])
def test_deep_nesting_is_a_clean_400_that_logs_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.get("/landing")
    with caplog.at_level(logging.DEBUG, logger="optibase_edge"):
        for i in range(100):
            response = beacon(client, content=DEEP[i % len(DEEP)])
            assert response.status_code == 400
            assert response.json() == {"error": "body is nested too deeply"}
    assert caplog.records == []


@pytest.mark.parametrize("site_settings", [UNLIMITED])
def test_a_failure_a_request_sets_off_is_a_400_and_one_warning_without_traceback(
    site: tuple[TestClient, Optibase], caplog: pytest.LogCaptureFixture
) -> None:
    client, ob = site

    def fails(token: str) -> None:
        raise RuntimeError("a cookie no one foresaw")

    ob._codec.decode = fails  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="optibase_edge"):
        for i in range(100):
            response = beacon(client, headers={"cookie": f"optibase_vid=x{i}"})
            assert response.status_code == 400
            assert response.json() == {"error": "request could not be processed"}
    assert [r for r in caplog.records if r.exc_info] == []
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # one a kind per interval
    assert "RuntimeError" in warnings[0] and "/_optibase/collect" in warnings[0]


# -- the site is its scheme and its host --------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "other"), [("http://testserver", "https"), ("https://testserver", "http")]
)
def test_origin_and_url_must_have_the_sites_scheme(events: Path, base_url: str, other: str) -> None:
    app, _ = make_site(events)
    with TestClient(app, base_url=base_url) as client:
        client.get("/landing")
        page = f"{base_url}/landing"
        body = {"type": "click", "conversion_id": "cta", "url": page}
        assert beacon(client, body, headers={"origin": base_url}).status_code == 204
        assert beacon(client, body, headers={"origin": f"{other}://testserver"}).status_code == 403
        assert beacon(client, body, headers={"origin": "null"}).status_code == 403
        elsewhere = {**body, "url": f"{other}://testserver/landing"}
        assert beacon(client, elsewhere).status_code == 400


def test_behind_a_trusted_proxy_the_scheme_is_the_one_it_forwards(events: Path) -> None:
    app, ob = make_site(events, trusted_proxies=["127.0.0.1/32"])
    _, cookie = signed_cookie(ob)
    body = {"type": "click", "conversion_id": "cta", "url": "https://testserver/landing"}
    https = {"cookie": cookie, "x-forwarded-proto": "https"}

    def status(client: TestClient, origin: str | None, url: str = body["url"]) -> int:
        headers = https if origin is None else {**https, "origin": origin}
        return int(beacon(client, {**body, "url": url}, headers=headers).status_code)

    with TestClient(app, client=("127.0.0.1", 50000)) as client:  # the proxy's plain http
        assert status(client, "https://testserver") == 204
        assert status(client, "http://testserver") == 403
        assert status(client, None, url=PAGE) == 400
    with TestClient(app, client=("192.0.2.1", 50000)) as client:  # not a proxy: not believed
        assert status(client, "https://testserver") == 403
        assert status(client, None, url=PAGE) == 204


# -- the visitor is the cookie's, and only a valid cookie's --------------------------------


def test_a_beacon_without_a_valid_cookie_is_403_and_emits_nothing_at_all(
    site: tuple[TestClient, Optibase], events: Path
) -> None:
    client, ob = site
    assert beacon(client).status_code == 403  # no cookie
    forged = {"cookie": "optibase_vid=WyJmb3JnZWQiXQ.forged"}
    assert beacon(client, headers=forged).status_code == 403
    assert client.portal is not None
    client.portal.call(ob.flush, 5)
    assert ob.stats()["accepted"] == 0  # not even an Identify for a visitor made up on the spot
    assert not events.exists() or events.read_text() == ""


def test_every_cookie_of_our_name_is_tried(
    site: tuple[TestClient, Optibase], conversions: Callable[[], list[Any]]
) -> None:
    # Another path or domain may hold a cookie of the same name, sent first.
    client, ob = site
    visitor_id, cookie = signed_cookie(ob)
    response = click(client, f"optibase_vid=junk; other=1; {cookie}")
    assert response.status_code == 204
    (found,) = conversions()
    assert found["anonymousId"] == visitor_id

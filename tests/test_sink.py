"""Tests for the local Segment-compatible sink (demo_site.sink)."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from demo_site.sink import create_sink_app
from optibase_edge import Conversion, ConversionType, Test, Variant, experiment_results
from tests.support.dashboard import assert_shows, read_results, view
from tests.support.net import free_port
from tests.support.server import serve
from tests.test_demo import wait_for_port

# A name the sink answers to (TestClient's own "testserver" is not one).
BASE_URL = "http://127.0.0.1:8001"
JSON = {"Content-Type": "application/json"}
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def track(
    visitor: str, event: str, properties: dict[str, Any], message_id: str, ts: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": event,
        "anonymousId": visitor,
        "messageId": message_id,
        "properties": properties,
    }
    if ts is not None:
        message["timestamp"] = ts
    return message


def viewed(visitor: str, test: str, variant: str, mid: str, ts: str | None = None) -> Any:
    return track(visitor, "Experiment Viewed", {"test_id": test, "variant_id": variant}, mid, ts)


def converted(
    visitor: str, conversion: str, variants: list[tuple[str, str]], mid: str, ts: str | None = None
) -> Any:
    properties = {
        "conversion_id": conversion,
        "conversion_type": "CLICK",
        "origin_url": "https://shop.example/",
        "variants": [{"test_id": t, "variant_id": v} for t, v in variants],
    }
    return track(visitor, "Conversion Triggered", properties, mid, ts)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_sink_app(str(tmp_path / "sink.sqlite3"))
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def calls(client: TestClient, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    response = client.get("/api/calls", params={"after": after, "limit": limit})
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


def post_batch(client: TestClient, messages: list[dict[str, Any]], **extra: Any) -> None:
    response = client.post("/v1/batch", json={"batch": messages, **extra})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}


# --------------------------------------------------------------------------- ingestion


def test_gzip_batch_is_stored(client: TestClient) -> None:
    body = {
        "batch": [
            {"type": "identify", "anonymousId": "a1", "userId": "u1", "traits": {"plan": "pro"}},
            viewed("a1", "hero", "control", "m-1", "2024-05-01T10:00:00.000Z"),
        ],
        "sentAt": "2024-05-01T10:00:01.000Z",
    }
    response = client.post(
        "/v1/batch", content=gzip.compress(json.dumps(body).encode()), headers=GZIP_JSON
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    stored = calls(client)
    assert [c["type"] for c in stored] == ["identify", "track"]
    identify, exposure = stored
    assert identify["user_id"] == "u1" and identify["anonymous_id"] == "a1"
    assert identify["traits"] == {"plan": "pro"}
    assert identify["message_id"]  # generated when missing
    assert exposure["event"] == "Experiment Viewed"
    assert exposure["message_id"] == "m-1"
    assert exposure["timestamp"] == "2024-05-01T10:00:00.000Z"
    assert exposure["sent_at"] == "2024-05-01T10:00:01.000Z"  # batch sentAt applies to items
    assert exposure["properties"] == {"test_id": "hero", "variant_id": "control"}
    assert exposure["raw"]["properties"] == exposure["properties"]
    assert exposure["id"] > identify["id"]


def test_single_calls(client: TestClient) -> None:
    assert client.post("/v1/track", json=track("a", "Clicked", {"x": 1}, "t1")).status_code == 200
    assert client.post("/v1/identify", json={"userId": "u"}).status_code == 200
    page = {"anonymousId": "a", "name": "Home", "properties": {"path": "/"}}
    assert client.post("/v1/page", json=page).status_code == 200
    stored = calls(client)
    assert [(c["type"], c["event"]) for c in stored] == [
        ("track", "Clicked"),
        ("identify", None),
        ("page", "Home"),
    ]


def test_top_level_context_and_integrations_merge_into_items(client: TestClient) -> None:
    post_batch(
        client,
        [
            {
                "type": "track",
                "event": "E",
                "anonymousId": "a",
                "context": {"ip": "10.0.0.2", "page": {"path": "/x"}, "library": {"version": "2"}},
                "integrations": {"Mixpanel": False},
            },
            {"type": "track", "event": "F", "anonymousId": "a"},
        ],
        context={"ip": "10.0.0.1", "library": {"name": "optibase-edge", "version": "1"}},
        integrations={"All": True},
    )
    first, second = calls(client)
    assert first["context"] == {
        "ip": "10.0.0.2",  # the item wins
        "page": {"path": "/x"},
        "library": {"name": "optibase-edge", "version": "2"},  # nested objects merge
    }
    assert first["raw"]["integrations"] == {"All": True, "Mixpanel": False}
    assert second["context"] == {
        "ip": "10.0.0.1",
        "library": {"name": "optibase-edge", "version": "1"},
    }
    assert second["raw"]["integrations"] == {"All": True}


@pytest.mark.parametrize(
    "body",
    [
        b"\x1f\x8b\x08\x00garbage-not-deflate",
        b"not gzip at all",
        gzip.compress(b'{"batch": []}')[:-6],  # truncated
    ],
    ids=["corrupt", "not-gzip", "truncated"],
)
def test_malformed_gzip_is_400(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/batch", content=body, headers=GZIP_JSON)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert calls(client) == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'{"batch": [}', b"\xff\xfe{}", b'{"a": NaN}', b'{"a": 1e999}'],
)
def test_invalid_json_is_400(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/batch", content=body, headers=JSON)
    assert response.status_code == 400
    assert "error" in response.json()


def test_oversize_body_is_400(client: TestClient) -> None:
    filler = "x" * (510 * 1024)
    message = {"type": "track", "event": "E", "anonymousId": "a", "properties": {"f": filler}}
    plain = json.dumps({"batch": [message]}).encode()
    assert client.post("/v1/batch", content=plain, headers=JSON).status_code == 400
    # Small on the wire, too big once decompressed.
    packed = gzip.compress(plain)
    assert len(packed) < 10_000
    assert client.post("/v1/batch", content=packed, headers=GZIP_JSON).status_code == 400
    assert calls(client) == []


def test_oversize_message_is_400(client: TestClient) -> None:
    message = track("a", "E", {"f": "y" * (33 * 1024)}, "big")
    assert client.post("/v1/track", json=message).status_code == 400


def test_write_key_auth(tmp_path: Path) -> None:
    app = create_sink_app(str(tmp_path / "auth.sqlite3"), write_key="secret")
    body = {"batch": [track("a", "E", {}, "m1")]}
    with TestClient(app, base_url=BASE_URL) as test_client:
        assert test_client.post("/v1/batch", json=body, headers=basic("wrong")).status_code == 401
        response = test_client.post("/v1/batch", json=body)  # no key at all
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert test_client.post("/v1/batch", json={**body, "writeKey": "nope"}).status_code == 401
        assert calls(test_client) == []

        assert test_client.post("/v1/batch", json=body, headers=basic("secret")).status_code == 200
        assert test_client.post("/v1/batch", json={**body, "writeKey": "secret"}).status_code == 200
        single = {**track("a", "E", {}, "m2"), "writeKey": "secret"}
        assert test_client.post("/v1/track", json=single).status_code == 200
        stored = calls(test_client)
        assert len(stored) == 3
        assert all("writeKey" not in c["raw"] for c in stored)  # the key is not echoed back


def test_no_write_key_configured_accepts_anything(client: TestClient) -> None:
    response = client.post(
        "/v1/batch", json={"batch": [track("a", "E", {}, "m")]}, headers=basic("whatever")
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "message",
    [
        {"type": "track", "event": "E"},
        {"type": "track", "event": "E", "anonymousId": "", "userId": None},
        {"type": "track", "anonymousId": "a"},  # track needs event
        {"type": "bogus", "anonymousId": "a"},
        {"type": "track", "event": "E", "anonymousId": "a", "messageId": "m" * 101},
        {"type": "track", "event": "E", "anonymousId": "a", "properties": [1]},
    ],
    ids=["no-ids", "empty-ids", "no-event", "bad-type", "long-message-id", "bad-properties"],
)
def test_invalid_message_rejects_the_whole_batch(client: TestClient, message: Any) -> None:
    batch = {"batch": [track("ok", "E", {}, "fine"), message]}
    response = client.post("/v1/batch", json=batch)
    assert response.status_code == 400
    assert "batch[1]" in response.json()["error"]
    assert calls(client) == []


def test_single_call_without_ids_is_400(client: TestClient) -> None:
    assert client.post("/v1/track", json={"event": "E"}).status_code == 400
    assert client.post("/v1/identify", json={"traits": {"a": 1}}).status_code == 400
    assert client.post("/v1/identify", json={"userId": "u"}).status_code == 200


# --------------------------------------------------------------------------- read API


def test_calls_pagination_and_reset(client: TestClient) -> None:
    post_batch(client, [track("a", "E", {"n": n}, f"m{n}") for n in range(5)])
    everything = calls(client)
    ids = [c["id"] for c in everything]
    assert ids == sorted(ids) and len(ids) == 5
    first = calls(client, after=0, limit=2)
    assert [c["properties"]["n"] for c in first] == [0, 1]
    rest = calls(client, after=first[-1]["id"], limit=2)
    assert [c["properties"]["n"] for c in rest] == [2, 3]
    assert [c["properties"]["n"] for c in calls(client, after=rest[-1]["id"])] == [4]
    assert calls(client, after=ids[-1]) == []
    assert len(client.get("/api/calls").json()) == 5  # defaults
    for bad in ({"after": "x"}, {"limit": "0"}, {"limit": "100000"}):
        assert client.get("/api/calls", params=bad).status_code == 400

    assert client.delete("/api/calls").json() == {"success": True, "deleted": 5}
    assert calls(client) == []
    post_batch(client, [track("a", "E", {}, "again")])
    (fresh,) = calls(client, after=ids[-1])  # ids keep growing after a reset
    assert fresh["id"] > ids[-1]
    assert client.post("/api/reset").json()["success"] is True
    assert calls(client) == []


def test_duplicates_are_kept_and_flagged(client: TestClient) -> None:
    message = track("a", "E", {}, "same")
    post_batch(client, [message])
    post_batch(client, [message])
    first, second = calls(client)
    assert (first["duplicate"], second["duplicate"]) == (False, True)


def identify(visitor: str | None, user: str, mid: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "identify", "userId": user, "messageId": mid}
    if visitor is not None:
        message["anonymousId"] = visitor
    return message


def user_converted(user: str, conversion: str, mid: str) -> dict[str, Any]:
    properties = {"conversion_id": conversion, "conversion_type": "PROGRAMMATIC"}
    return {
        "type": "track",
        "event": "Conversion Triggered",
        "userId": user,
        "messageId": mid,
        "properties": properties,
    }


SCRIPT: list[dict[str, Any]] = [
    viewed("v1", "hero", "control", "e1"),
    viewed("v1", "pricing", "b", "e2"),
    viewed("v2", "hero", "control", "e3"),
    viewed("v3", "hero", "treatment", "e4"),
    viewed("v4", "hero", "treatment", "e5"),
    viewed("v4", "hero", "treatment", "e5"),  # exact resend
    viewed("v5", "hero", "control", "dup"),
    # Same messageId, different content: Segment drops it, so v6 is never exposed.
    viewed("v6", "hero", "control", "dup"),
    track(
        "v10",
        "Experiment Viewed",  # Segment A/B spec aliases only
        {"experiment_id": "hero", "variation_id": "treatment"},
        "e6",
    ),
    # v1 converts: for every variant it saw (hero/control and pricing/b), whatever the list says.
    converted("v1", "signup", [("hero", "control")], "c1"),
    # v3 converts twice on signup: one visitor, counted once.
    converted("v3", "signup", [], "c2"),
    converted("v3", "signup", [], "c3"),
    # A messageId already seen: dropped, so v2 does not convert.
    converted("v2", "signup", [("hero", "control")], "c2"),
    converted("v6", "signup", [("hero", "control")], "c4"),  # v6 was never exposed
    converted("v9", "newsletter", [], "c5"),  # nor was v9: counts nowhere, but is listed
    # A user's purchase counts for the visitor a later Identify links to the user (v4) ...
    user_converted("u4", "purchase", "c6"),
    identify("v4", "u4", "i1"),
    # ... and an Identify without an anonymousId links nothing.
    user_converted("u9", "purchase", "c7"),
    identify(None, "u9", "i2"),
    # Neither of the two tracks results are made of.
    track("v2", "Clicked", {"conversion_id": "signup"}, "o1"),
    {"type": "page", "anonymousId": "v2", "name": "Home", "messageId": "p1"},
]


def first_of_each_message_id(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Segment keeps: the first message of each messageId."""
    kept: dict[str, dict[str, Any]] = {}
    for message in messages:
        kept.setdefault(message["messageId"], message)
    return list(kept.values())


def counts(report: dict[str, Any]) -> dict[tuple[str, str], tuple[int, dict[str, int]]]:
    """{(test, variant): (visitors, {conversion id: converting visitors})} of a report."""
    return {
        (test["test_id"], variant["variant_id"]): (
            variant["visitors"],
            {cid: c["visitors"] for cid, c in variant["conversions"].items()},
        )
        for test in report["tests"]
        for variant in test["variants"]
    }


def test_result_messages_are_each_message_ids_first_that_counts(client: TestClient) -> None:
    post_batch(client, SCRIPT[:8])  # split over requests: dedupe is across requests
    post_batch(client, SCRIPT[8:])
    messages = client.app.state.sink_store.result_messages()  # type: ignore[attr-defined]
    assert [(m["type"], m["anonymousId"], m["userId"], m.get("event")) for m in messages] == [
        ("track", "v1", None, "Experiment Viewed"),
        ("track", "v1", None, "Experiment Viewed"),
        ("track", "v2", None, "Experiment Viewed"),
        ("track", "v3", None, "Experiment Viewed"),
        ("track", "v4", None, "Experiment Viewed"),
        ("track", "v5", None, "Experiment Viewed"),
        ("track", "v10", None, "Experiment Viewed"),
        ("track", "v1", None, "Conversion Triggered"),
        ("track", "v3", None, "Conversion Triggered"),
        ("track", "v3", None, "Conversion Triggered"),
        ("track", "v6", None, "Conversion Triggered"),
        ("track", "v9", None, "Conversion Triggered"),
        ("track", None, "u4", "Conversion Triggered"),
        ("identify", "v4", "u4", None),
        ("track", None, "u9", "Conversion Triggered"),
    ]
    assert messages[0]["properties"] == {"test_id": "hero", "variant_id": "control"}
    assert "properties" not in messages[-2]


def test_api_results_is_the_report_of_each_message_id_once(client: TestClient) -> None:
    post_batch(client, SCRIPT[:8])
    post_batch(client, SCRIPT[8:])
    report = client.get("/api/results").json()
    assert report == experiment_results(first_of_each_message_id(SCRIPT)).to_json()
    # Without a configuration: tests by id, the variant called control first, conversions by id.
    no_conversions = {"newsletter": 0, "purchase": 0, "signup": 0}
    assert counts(report) == {
        ("hero", "control"): (3, {**no_conversions, "signup": 1}),
        ("hero", "treatment"): (3, {**no_conversions, "purchase": 1, "signup": 1}),
        ("pricing", "b"): (1, {**no_conversions, "signup": 1}),
    }


def test_api_results_empty(client: TestClient) -> None:
    assert client.get("/api/results").json() == {"tests": []}


# --------------------------------------------------------------------------- dashboard

HERO = Test(
    id="hero",
    name="Home page headline",
    variants=[Variant("calm", name="Calm headline"), Variant("bold", name="Bold promise")],
)
SIGNUP = Conversion(id="signup", type=ConversionType.PROGRAMMATIC, name="Signed up")
PURCHASE = Conversion(id="purchase", type=ConversionType.PROGRAMMATIC, name="Bought a plan")


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[TestClient]:
    """A sink told the site's configuration: names, control, weights and order."""
    app = create_sink_app(
        str(tmp_path / "configured.sqlite3"), tests=[HERO], conversions=[SIGNUP, PURCHASE]
    )
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def split(test: str, visitors: dict[str, int], converting: int = 0) -> list[dict[str, Any]]:
    """Exposures to *test*, *visitors[variant]* per variant; the first *converting* sign up."""
    messages = []
    for variant, count in visitors.items():
        for n in range(count):
            visitor = f"{test}-{variant}-{n}"
            messages.append(viewed(visitor, test, variant, f"e-{visitor}"))
            if n < converting:
                messages.append(converted(visitor, "signup", [], f"c-{visitor}"))
    return messages


def test_dashboard_empty_state(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>Experiment results (local) · optibase-edge</title>" in response.text
    assert "<h1>Experiment results</h1>" in response.text
    assert "local Segment-compatible sink" in response.text
    assert "No experiment data yet" in response.text
    assert "No calls yet" in response.text
    assert 'Raw calls (<span id="calls-count">0</span>)' in response.text
    assert 'data-after="0"' in response.text


def test_dashboard_shows_results_and_escapes_data(client: TestClient) -> None:
    post_batch(client, SCRIPT)
    evil_test = "<script>alert(1)</script>"
    evil_variant = '"><img src=x onerror=alert(1)>'
    evil_conversion = "</td><b>boom</b>"
    hostile = [
        viewed("x1", evil_test, evil_variant, "evil-1"),
        converted("x1", evil_conversion, [(evil_test, evil_variant)], "evil-2"),
    ]
    post_batch(client, hostile)
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert "script-src 'nonce-" in response.headers["content-security-policy"]
    assert "<svg" in page
    # Every figure, as experiment_results() has it; the hostile ids read back as the text they are.
    shown = read_results(page)
    assert_shows(shown, experiment_results(first_of_each_message_id(SCRIPT + hostile)))
    assert view(shown, evil_test).table(evil_conversion).rows[0].variant == evil_variant
    # ... and appear only escaped (the page's own <script nonce=...> is its only script).
    assert evil_test not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page
    assert "<b>boom</b>" not in page
    assert page.count("<script") == 1
    # The raw feed is pre-rendered and polls from the newest id.
    newest = calls(client)[-1]["id"]
    assert f'data-after="{newest}"' in page
    assert f'Raw calls (<span id="calls-count">{len(SCRIPT) + 2}</span>)' in page
    assert 'data-calls-url="/api/calls"' in page


def test_hostile_names_from_the_configuration_are_escaped() -> None:
    evil_name = "<script>alert(1)</script>"
    test = Test(
        id='hero"><svg onload=alert(1)>',
        name=evil_name,
        variants=[Variant("a", name='"><img src=x onerror=alert(1)>'), Variant("b")],
    )
    conversion = Conversion(id="signup", type=ConversionType.PROGRAMMATIC, name="</td><b>boom</b>")
    app = create_sink_app(":memory:", tests=[test], conversions=[conversion])
    messages = split(test.id, {"a": 3, "b": 2}, converting=1)
    expected = experiment_results(messages, tests=[test], conversions=[conversion])
    with TestClient(app, base_url=BASE_URL) as http:
        post_batch(http, messages)
        for path in ("/", "/results"):
            page = http.get(path).text
            shown = read_results(page)
            assert_shows(shown, expected)  # names and ids read back as the text they are
            assert shown[0].heading == f"{evil_name} {test.id}"
            assert "<img" not in page and "<b>boom</b>" not in page and "<svg onload" not in page
            assert page.count("<script") == (1 if path == "/" else 0)
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_names_order_and_control_come_from_the_configuration(configured: TestClient) -> None:
    # Without the configuration "bold" would come first (by id) and be taken for the control.
    messages = split("hero", {"bold": 30, "calm": 30}, converting=3)
    post_batch(configured, messages)
    page = configured.get("/").text
    (hero,) = read_results(page)
    assert_shows([hero], experiment_results(messages, tests=[HERO], conversions=[SIGNUP, PURCHASE]))
    assert hero.heading == "Home page headline hero"
    assert [t.conversion for t in hero.tables] == ["signup", "purchase"]
    assert [t.heading for t in hero.tables] == ["Signed up signup", "Bought a plan purchase"]
    rows = hero.table("signup").rows
    assert [(r.variant, r.control, r.label) for r in rows] == [
        ("calm", True, "Calm headline calm Control"),
        ("bold", False, "Bold promise bold"),
    ]
    assert rows[0].cells["verdict"].text == "baseline"
    report = configured.get("/api/results").json()
    assert [v["variant_id"] for v in report["tests"][0]["variants"]] == ["calm", "bold"]
    assert report["tests"][0]["variants"][0]["control"] is True


def test_a_configured_test_shows_before_any_event(configured: TestClient) -> None:
    (hero,) = read_results(configured.get("/").text)
    assert hero.heading == "Home page headline hero"
    assert [r.cells["visitors"].value for r in hero.table("signup").rows] == ["0", "0"]


@pytest.mark.parametrize(
    ("visitors", "warned"),
    [({"calm": 100, "bold": 10}, True), ({"calm": 50, "bold": 50}, False)],
    ids=["lopsided", "even"],
)
def test_srm_banner_only_for_a_split_off_the_weights(
    configured: TestClient, visitors: dict[str, int], warned: bool
) -> None:
    messages = split("hero", visitors)
    assert experiment_results(messages, tests=[HERO]).tests[0].srm_warning is warned
    post_batch(configured, messages)
    page = configured.get("/").text
    (hero,) = read_results(page)
    assert hero.srm.data["warning"] == ("true" if warned else "false")
    assert ('role="alert"' in page) is warned
    assert ("Sample ratio mismatch" in hero.srm.text) is warned
    assert ("does not match the configured weights" in hero.srm.text) is warned
    assert ("Do not trust these figures" in hero.srm.text) is warned
    assert hero.srm.text.startswith("traffic split as configured (SRM p") is not warned


def test_results_fragment_is_what_the_page_shows(configured: TestClient) -> None:
    messages = split("hero", {"calm": 40, "bold": 44}, converting=4)
    post_batch(configured, messages)
    page = configured.get("/")
    fragment = configured.get("/results")
    assert fragment.status_code == 200
    assert fragment.headers["content-type"].startswith("text/html")
    assert fragment.headers["cache-control"] == "no-store"
    assert fragment.headers["content-security-policy"].startswith("default-src 'none';")
    assert 'data-test="hero"' in fragment.text and "<script" not in fragment.text
    # The page embeds exactly the fragment, where the script swaps fresh copies in.
    assert f'<div id="results" data-results-url="/results">{fragment.text}</div>' in page.text
    expected = experiment_results(messages, tests=[HERO], conversions=[SIGNUP, PURCHASE])
    assert_shows(read_results(fragment.text), expected)
    # Fetched again after new events, it has them.
    post_batch(configured, [viewed("late", "hero", "bold", "late-1")])
    (hero,) = read_results(configured.get("/results").text)
    assert hero.table("signup").row("bold").cells["visitors"].value == "45"


def test_a_test_without_conversions_still_shows_its_visitors(client: TestClient) -> None:
    post_batch(client, split("hero", {"control": 3, "bold": 2}))
    fragment = client.get("/results").text
    (hero,) = read_results(fragment)
    assert hero.tables == []
    assert "No conversions yet" in fragment
    assert '<span data-field="visitors" data-value="3">3</span>' in fragment
    assert '<span data-field="visitors" data-value="2">2</span>' in fragment


def test_dashboard_survives_lone_surrogates_and_control_chars(client: TestClient) -> None:
    body = json.dumps({"batch": [viewed("s1", "t\ud800\x00", "v\udfff", "s-1")]}).encode()
    assert client.post("/v1/batch", content=body, headers=JSON).status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/results").status_code == 200
    (test,) = client.get("/api/results").json()["tests"]
    assert test["test_id"] == "t\ud800\x00"


# --------------------------------------------------------------------------- web pages kept out

VICTIM_IP = "203.0.113.7"
VICTIM_AGENT = "Mozilla/5.0 (victim's browser)"


def store_a_visit(client: TestClient | httpx2.Client) -> None:
    """One call holding what a hostile page would want: a visitor's IP and user agent."""
    message = viewed("victim", "hero", "control", "m-victim")
    message["context"] = {"ip": VICTIM_IP, "userAgent": VICTIM_AGENT}
    response = client.post("/v1/batch", json={"batch": [message]})
    assert response.status_code == 200, response.text


def test_a_rebound_host_name_is_refused_without_data(tmp_path: Path) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    app = create_sink_app(str(tmp_path / "rebind.sqlite3"), allowed_hosts=["demo.lan"])
    with serve(app) as base, httpx2.Client(base_url=base, timeout=5) as http:
        store_a_visit(http)
        port = base.rsplit(":", 1)[1]
        for host in (
            f"evil.example:{port}",
            "evil.example",
            f"localhost.evil.example:{port}",
            f"127.0.0.1.nip.io:{port}",
            f"[::1]x:{port}",
            f"localhost:{port}@evil.example",
            "",
        ):
            for path in ("/", "/results", "/api/calls", "/api/results"):
                response = http.get(path, headers={"Host": host})
                assert response.status_code == 400, (host, path)
                assert response.json()["error"].startswith("Host not allowed")
                for secret in ("victim", VICTIM_IP, VICTIM_AGENT):
                    assert secret not in response.text
        # Loopback names in any case, with any port, and the name it was given.
        for host in (f"localhost:{port}", f"LocalHost:{port}", "[::1]:8001", f"demo.lan:{port}"):
            response = http.get("/api/calls", headers={"Host": host})
            assert response.status_code == 200, host
            assert VICTIM_IP in response.text


FOREIGN_PAGES = {
    "cross-site": {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    "origin-only": {"Origin": "http://evil.example"},
    "opaque-origin": {"Origin": "null"},
    "demo-site-port": {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-site"},
    "other-scheme": {"Origin": "https://127.0.0.1:8001"},
    "cross-site-metadata-only": {"Sec-Fetch-Site": "cross-site"},
    "same-site-metadata-only": {"Sec-Fetch-Site": "same-site"},
}


@pytest.mark.parametrize("headers", FOREIGN_PAGES.values(), ids=FOREIGN_PAGES)
def test_a_page_of_another_origin_changes_nothing(
    client: TestClient, headers: dict[str, str]
) -> None:
    """CSRF: another page makes the visitor's browser reset the sink, or post to it."""
    store_a_visit(client)
    for method, path in (("POST", "/api/reset"), ("DELETE", "/api/calls")):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 403, (method, path)
        assert response.json() == {"success": False, "error": "cross-origin request refused"}
    post = client.post("/v1/batch", json={"batch": [track("a", "E", {}, "m")]}, headers=headers)
    assert post.status_code == 403
    assert [c["message_id"] for c in calls(client)] == ["m-victim"]
    assert client.get("/api/calls", headers=headers).status_code == 200  # reading is no change


@pytest.mark.parametrize(
    "headers",
    [{"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"}, {}],
    ids=["same-origin-page", "script"],
)
def test_own_pages_and_scripts_may_reset(client: TestClient, headers: dict[str, str]) -> None:
    store_a_visit(client)
    assert client.post("/api/reset", headers=headers).json() == {"success": True, "deleted": 1}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain;charset=UTF-8",  # what fetch() sends for a string body
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,  # fetch() with a Blob or ArrayBuffer body
        "application/jsonx",
    ],
)
def test_only_json_bodies_are_ingested(client: TestClient, content_type: str | None) -> None:
    """A page posting JSON as text/plain (which needs no CORS preflight) stores nothing."""
    body = json.dumps({"writeKey": "demo", "batch": [viewed("fake", "hero", "control", "f1")]})
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path in ("/v1/batch", "/v1/track"):
        response = client.post(path, content=body.encode(), headers=headers)
        assert response.status_code == 415, path
        assert response.json()["error"] == "Content-Type must be application/json"
    assert calls(client) == []
    for accepted in ("application/json; charset=utf-8", "Application/JSON"):
        response = client.post(
            "/v1/batch", content=body.encode(), headers={"Content-Type": accepted}
        )
        assert response.status_code == 200, accepted


# --------------------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    # any code point, lone surrogates included (valid JSON as \uXXXX escapes)
    # (a high+low pair of lone surrogates is excluded: JSON reads it as one astral character)
    | st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=20).filter(
        lambda text: json.loads(json.dumps(text)) == text
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def memory_client() -> Iterator[TestClient]:
    with TestClient(create_sink_app(":memory:"), base_url=BASE_URL) as test_client:
        yield test_client


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(properties=st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_property_values_round_trip(memory_client: TestClient, properties: dict[str, Any]) -> None:
    memory_client.post("/api/reset")
    message = track("anon-\u00e9\U0001f600", "Round Trip", properties, "rt")
    # ensure_ascii keeps lone surrogates sendable (as \\uXXXX escapes)
    body = json.dumps({"batch": [message]}).encode()
    response = memory_client.post("/v1/batch", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    (stored,) = memory_client.get("/api/calls").json()
    assert stored["properties"] == properties
    assert stored["raw"]["properties"] == properties
    assert stored["anonymous_id"] == "anon-\u00e9\U0001f600"


# --------------------------------------------------------------------------- real server


def test_real_uvicorn_server_accepts_gzip_batch(tmp_path: Path) -> None:
    app = create_sink_app(str(tmp_path / "live.sqlite3"), write_key="live-key")
    body = {
        "batch": [
            viewed("live-1", "hero", "control", "live-m1"),
            converted("live-1", "signup", [("hero", "control")], "live-m2"),
        ],
        "sentAt": "2024-05-01T10:00:00Z",
    }
    with serve(app, lifespan="on") as base, httpx2.Client(base_url=base, timeout=5) as http:
        response = http.post(
            "/v1/batch",
            content=gzip.compress(json.dumps(body).encode()),
            headers={**GZIP_JSON, **basic("live-key")},
        )
        assert response.status_code == 200
        assert response.json() == {"success": True}
        denied = http.post(
            "/v1/batch",
            content=gzip.compress(json.dumps(body).encode()),
            headers={**GZIP_JSON, **basic("other")},
        )
        assert denied.status_code == 401
        stored = http.get("/api/calls").json()
        assert [c["message_id"] for c in stored] == ["live-m1", "live-m2"]
        results = http.get("/api/results").json()
        (variant,) = results["tests"][0]["variants"]
        assert variant["conversions"]["signup"]["visitors"] == 1
        assert variant["conversions"]["signup"]["rate"] == 1.0
        assert "<svg" in http.get("/").text


# ------------------------------------------------------------------------- python -m demo_site.sink

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[[tests]]
id = "hero"
name = "Home page headline"
[[tests.variants]]
id = "calm"
name = "Calm headline"
[[tests.variants]]
id = "bold"

[[conversions]]
id = "signup"
type = "PROGRAMMATIC"
name = "Signed up"
"""


def sink_command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "demo_site.sink", "--db", str(tmp_path / "cli.sqlite3"), *args]


def test_python_m_sink_reads_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "optibase.toml"
    config.write_text(CONFIG, encoding="utf-8")
    port = free_port()
    process = subprocess.Popen(
        sink_command(tmp_path, "--config", str(config), "--port", str(port)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        base = f"http://127.0.0.1:{port}"
        exposures = split("hero", {"bold": 2, "calm": 2})
        assert httpx2.post(f"{base}/v1/batch", json={"batch": exposures}).status_code == 200
        (hero,) = read_results(httpx2.get(f"{base}/", timeout=5).text)
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert hero.heading == "Home page headline hero"
    assert [t.heading for t in hero.tables] == ["Signed up signup"]
    assert [r.label for r in hero.table("signup").rows] == ["Calm headline calm Control", "bold"]


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "cannot read"),
        ("[[tests]\n", "is not valid TOML"),
        (CONFIG.replace('name = "Signed up"', 'nmae = "Signed up"'), "unknown field 'nmae'"),
        (CONFIG.replace('[[tests.variants]]\nid = "bold"\n', ""), "at least two variants"),
    ],
    ids=["missing", "not-toml", "typo", "invalid-test"],
)
def test_python_m_sink_refuses_a_bad_configuration_by_name(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    config = tmp_path / "optibase.toml"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    done = subprocess.run(
        sink_command(tmp_path, "--config", str(config), "--port", str(free_port())),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"demo_site.sink: --config {config}: "), done.stderr
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cli.sqlite3").exists()  # refused before anything started

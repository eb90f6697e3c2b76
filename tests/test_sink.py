"""Tests for the local Segment-compatible sink (demo_site.sink)."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from demo_site.sink import create_sink_app
from tests.support.server import serve

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


SCRIPT: list[dict[str, Any]] = [
    viewed("v1", "hero", "control", "e1", "2024-05-01T10:00:00Z"),
    viewed("v1", "pricing", "b", "e2", "2024-05-01T10:00:01Z"),
    viewed("v2", "hero", "control", "e3", "2024-05-01T10:00:02Z"),
    viewed("v2", "pricing", "a", "e4", "2024-05-01T10:00:03Z"),
    viewed("v3", "hero", "treatment", "e5", "2024-05-01T10:00:04Z"),
    viewed("v4", "hero", "treatment", "e6", "2024-05-01T10:00:05Z"),
    viewed("v4", "hero", "treatment", "e6", "2024-05-01T10:00:05Z"),  # exact resend
    viewed("v5", "hero", "control", "dup", "2024-05-01T10:00:06Z"),
    # Same messageId, different content: Segment drops it, so v6 is never exposed.
    viewed("v6", "hero", "control", "dup", "2024-05-01T10:00:07Z"),
    track(
        "v10",
        "Experiment Viewed",  # Segment A/B spec aliases only
        {"experiment_id": "hero", "variation_id": "treatment"},
        "e7",
        "2024-05-01T10:00:08Z",
    ),
    # v1 converts; the list names hero/control, pricing/b counts via the earlier exposure.
    converted("v1", "signup", [("hero", "control")], "c1", "2024-05-01T10:01:00Z"),
    # v3 converts twice on signup (distinct messageIds, one visitor) and once on purchase
    # with no list at all (credited through the earlier Experiment Viewed).
    converted("v3", "signup", [("hero", "treatment")], "c2", "2024-05-01T10:01:01Z"),
    converted("v3", "signup", [("hero", "treatment")], "c3", "2024-05-01T10:01:02Z"),
    converted("v3", "purchase", [], "c4", "2024-05-01T10:01:03Z"),
    converted("v3", "purchase", [], "c4", "2024-05-01T10:01:03Z"),  # resend
    # The conversions' variants list alone credits the variant.
    converted("v8", "signup", [("hero", "treatment")], "c5", "2024-05-01T10:01:04Z"),
    # Never exposed: counts nowhere (but its conversion id is listed).
    converted("v7", "newsletter", [], "c6", "2024-05-01T10:01:05Z"),
    # Converts before being exposed: not credited to that later exposure.
    converted("v9", "signup", [], "c7", "2024-05-01T10:02:00Z"),
    viewed("v9", "hero", "control", "e8", "2024-05-01T10:03:00Z"),
    # userId only: no visitor, ignored by the results.
    {
        "type": "track",
        "event": "Experiment Viewed",
        "userId": "u-only",
        "messageId": "e9",
        "properties": {"test_id": "hero", "variant_id": "control"},
    },
]


def rates(results: dict[str, Any]) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    return {
        (test["test_id"], variant["variant_id"]): (
            variant["exposed"],
            {cid: (c["visitors"], c["rate"]) for cid, c in variant["conversions"].items()},
        )
        for test in results["tests"]
        for variant in test["variants"]
    }


def test_results(client: TestClient) -> None:
    post_batch(client, SCRIPT[:9])  # split over requests: dedupe is across requests
    post_batch(client, SCRIPT[9:])
    results = client.get("/api/results").json()
    assert results["conversion_ids"] == ["newsletter", "purchase", "signup"]
    assert [t["test_id"] for t in results["tests"]] == ["hero", "pricing"]
    assert rates(results) == {
        ("hero", "control"): (
            4,
            {"newsletter": (0, 0.0), "purchase": (0, 0.0), "signup": (1, 0.25)},
        ),
        ("hero", "treatment"): (
            3,
            {"newsletter": (0, 0.0), "purchase": (1, 1 / 3), "signup": (2, 2 / 3)},
        ),
        ("pricing", "a"): (1, {"newsletter": (0, 0.0), "purchase": (0, 0.0), "signup": (0, 0.0)}),
        ("pricing", "b"): (1, {"newsletter": (0, 0.0), "purchase": (0, 0.0), "signup": (1, 1.0)}),
    }


def test_results_empty_and_unexposed_variant_rate(client: TestClient) -> None:
    assert client.get("/api/results").json() == {"tests": [], "conversion_ids": []}
    post_batch(client, [converted("v", "signup", [("t", "only-listed")], "c")])
    (test,) = client.get("/api/results").json()["tests"]
    assert test["variants"] == [
        {
            "variant_id": "only-listed",
            "exposed": 0,
            "conversions": {"signup": {"visitors": 1, "rate": None}},
        }
    ]


# --------------------------------------------------------------------------- dashboard


def test_dashboard_empty_state(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "No experiment data yet" in response.text
    assert "No calls yet" in response.text
    assert 'data-after="0"' in response.text


def test_dashboard_shows_results_and_escapes_data(client: TestClient) -> None:
    post_batch(client, SCRIPT)
    evil_test = "<script>alert(1)</script>"
    evil_variant = '"><img src=x onerror=alert(1)>'
    post_batch(
        client,
        [
            viewed("x1", evil_test, evil_variant, "evil-1"),
            converted("x1", "</td><b>boom</b>", [(evil_test, evil_variant)], "evil-2"),
        ],
    )
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert "<svg" in page
    assert "script-src 'nonce-" in response.headers["content-security-policy"]
    # table numbers: hero/control 4 exposed, 1 signup = 25.0%; hero/treatment 2 of 3.
    assert "25.0%" in page and "66.7%" in page and "33.3%" in page
    assert '<td class="num">4</td>' in page and '<td class="num">3</td>' in page
    assert "<code>hero</code>" in page and "<code>pricing</code>" in page
    # hostile strings only ever appear escaped (my own <script nonce=...> is the only script)
    assert evil_test not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page
    assert "<b>boom</b>" not in page
    assert page.count("<script") == 1
    # the live feed is pre-rendered and polls from the newest id
    newest = calls(client)[-1]["id"]
    assert f'data-after="{newest}"' in page
    assert 'data-calls-url="/api/calls"' in page


def test_dashboard_survives_lone_surrogates_and_control_chars(client: TestClient) -> None:
    body = json.dumps({"batch": [viewed("s1", "t\ud800\x00", "v\udfff", "s-1")]}).encode()
    assert client.post("/v1/batch", content=body, headers=JSON).status_code == 200
    assert client.get("/").status_code == 200
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
            for path in ("/", "/api/calls", "/api/results"):
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
        assert variant["conversions"]["signup"] == {"visitors": 1, "rate": 1.0}
        assert "<svg" in http.get("/").text

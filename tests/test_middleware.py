"""OptibaseMiddleware in front of real Starlette and FastAPI apps.

Events go to a JSON-lines file (development transport); they are read after
``ob.flush()`` (run in the TestClient's own event loop) or after the client
closes, which runs lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    Test,
    Variant,
    Visitor,
    get_visitor,
)
from optibase_edge._cookie import CookieCodec
from optibase_edge._pages import PageRules
from tests.support.accounting import balanced
from tests.support.user_agents import AS_A_BROWSER

COOKIE = "optibase_vid"
KEY = "test-secret-key-0123456789abcdef-0123"
OLD_KEY = "old-key-" + "o" * 32
NEW_KEY = "new-key-" + "n" * 32


def make_optibase(tmp_path: Path, **kwargs: Any) -> Optibase:
    kwargs.setdefault("secret_keys", [KEY])
    kwargs.setdefault("events_path", tmp_path / "events.jsonl")
    return Optibase(
        tests=[
            Test(
                id="hero", variants=[Variant("control"), Variant("bold")], pages=["/", "/landing/*"]
            ),
            Test(id="cta", variants=[Variant("blue"), Variant("green")], pages=["/landing/*"]),
            Test(id="side", variants=[Variant("left"), Variant("right")]),
            Test(id="paused", variants=[Variant("p1"), Variant("p2")], status="paused"),
            Test(
                id="done",
                variants=[Variant("old"), Variant("new")],
                status="stopped",
                winner="new",
                pages=["/landing/*"],
            ),
            Test(id="nowinner", variants=[Variant("x"), Variant("y")], status="stopped"),
        ],
        conversions=[
            Conversion(
                id="signup", type=ConversionType.CLICK, selector="#signup", one_per_visitor=True
            ),
            Conversion(id="pricing", type=ConversionType.PAGE_VIEW, url="/pricing"),
            Conversion(id="purchase", type=ConversionType.PROGRAMMATIC),
            Conversion(id="newsletter", type=ConversionType.PROGRAMMATIC, one_per_visitor=True),
        ],
        **kwargs,
    )


# -- the site -----------------------------------------------------------------------------


async def static_page(request: Request) -> Response:
    """A page that never asks for the visitor (usable without the middleware)."""
    return PlainTextResponse("static page")


async def variants_page(request: Request) -> Response:
    visitor = get_visitor(request)
    return JSONResponse(
        {
            "id": visitor.id,
            "hero": visitor.variant("hero"),
            "active": visitor.active_variants,
        }
    )


async def assign(request: Request) -> Response:
    visitor = get_visitor(request)
    return JSONResponse({"variant": visitor.variant(request.path_params["test"])})


async def pricing(request: Request) -> Response:
    return PlainTextResponse("pricing", status_code=int(request.query_params.get("status", 200)))


async def buy(request: Request) -> Response:
    visitor = get_visitor(request)
    conversion = request.query_params.get("conversion", "purchase")
    times = int(request.query_params.get("times", 1))
    try:
        for _ in range(times):
            await visitor.convert(conversion)
    except ValueError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    return PlainTextResponse("bought")


async def identify(request: Request) -> Response:
    visitor = get_visitor(request)
    visitor.identify("u1", traits={"plan": "pro", "名前": "ユーザー"})
    return JSONResponse({"id": visitor.id, "user_id": visitor.user_id})


async def boom(request: Request) -> Response:
    raise RuntimeError("boom from the view")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(6):
            await asyncio.sleep(0)
            yield f"chunk-{i};".encode() * (i + 1)

    return StreamingResponse(chunks(), media_type="text/plain")


BACKGROUND_RAN: list[str] = []


async def with_background(request: Request) -> Response:
    def task(tag: str) -> None:
        BACKGROUND_RAN.append(tag)

    return PlainTextResponse("ok", background=BackgroundTask(task, request.query_params["tag"]))


async def html_page(request: Request) -> Response:
    return HTMLResponse("<html><head><title>t</title></head><body>hi</body></html>")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_json({"echo": text, "has_visitor": "optibase.visitor" in websocket.scope})
    await websocket.close()


ROUTES = [
    Route("/", variants_page),
    Route("/landing/static", static_page),
    Route("/landing/stream", stream),
    Route("/landing/boom", boom),
    Route("/landing/{name}", variants_page, methods=["GET", "POST"]),
    Route("/plain", static_page),
    Route("/html", html_page),
    Route("/whoami", variants_page),
    Route("/assign/{test}", assign),
    Route("/pricing", pricing, methods=["GET", "POST"]),
    Route("/buy", buy, methods=["GET", "POST"]),
    Route("/identify", identify),
    Route("/boom", boom),
    Route("/stream", stream),
    Route("/bg", with_background),
    WebSocketRoute("/ws", echo),
]


def site(ob: Optibase | None, lifespan: Any = None) -> Starlette:
    app = Starlette(routes=ROUTES, lifespan=lifespan)
    if ob is not None:
        app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def ob(tmp_path: Path) -> Optibase:
    return make_optibase(tmp_path)


@pytest.fixture
def client(ob: Optibase) -> Iterator[TestClient]:
    with TestClient(site(ob)) as test_client:
        yield test_client


def fetch(
    client: TestClient, path: str, token: str | None = None, method: str = "GET", **kwargs: Any
) -> httpx2.Response:
    """One request with exactly the cookie given (the client's jar is not used)."""
    client.cookies.clear()
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["cookie"] = f"{COOKIE}={token}"
    response = client.request(method, path, headers=headers, **kwargs)
    client.cookies.clear()
    return response


def set_cookies(response: httpx2.Response) -> list[str]:
    return [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")]


def cookie_of(response: httpx2.Response) -> tuple[str, set[str]] | None:
    """(token, lower-cased attributes) of our Set-Cookie, or None."""
    values = set_cookies(response)
    if not values:
        return None
    assert len(values) == 1, values
    first, *attributes = [part.strip() for part in values[0].split(";")]
    return first.split("=", 1)[1], {a.lower() for a in attributes}


def token_of(response: httpx2.Response) -> str:
    found = cookie_of(response)
    assert found is not None, f"no {COOKIE} Set-Cookie in {response.headers}"
    return found[0]


def read_events(ob: Optibase) -> list[dict[str, Any]]:
    path = ob.settings.events_path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def flushed(client: TestClient, ob: Optibase) -> list[dict[str, Any]]:
    assert client.portal is not None
    assert client.portal.call(ob.flush, 5.0) is True
    return read_events(ob)


def identifies(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "identify"]


def tracks(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "track" and e["event"] == name]


def exposures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return tracks(events, "Experiment Viewed")


def conversions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return tracks(events, "Conversion Triggered")


def check_identity(ob: Optibase) -> dict[str, int]:
    stats = ob.stats()
    assert balanced(stats), stats
    return stats


def returning_visitor(client: TestClient) -> tuple[str, str, dict[str, str]]:
    """A visitor who has been to "/": (token, visitor id, assignments)."""
    response = fetch(client, "/")
    token = token_of(response)
    body = response.json()
    return token, body["id"], body["active"]


# -- a new visitor ------------------------------------------------------------------------


def test_new_visitor_gets_cookie_and_one_identify_then_exposures(
    client: TestClient, ob: Optibase
) -> None:
    response = fetch(
        client, "/landing/spring?utm_source=news", headers={"accept-language": "de-DE,de"}
    )
    assert response.status_code == 200
    body = response.json()
    token, attributes = cookie_of(response) or ("", set())
    assert {
        "httponly",
        "samesite=lax",
        "path=/",
        f"max-age={ob.settings.cookie_max_age}",
    } <= attributes
    assert "secure" not in attributes

    record = CookieCodec([KEY]).decode(token)
    assert record is not None
    assert record.visitor_id == body["id"]
    assert dict(record.assignments) == body["active"]
    assert set(body["active"]) == {"hero", "cta"}  # the running tests on /landing/*
    assert body["active"]["hero"] == body["hero"]

    events = flushed(client, ob)
    assert events[0]["type"] == "identify"
    assert len(identifies(events)) == 1
    ident = identifies(events)[0]
    assert ident["anonymousId"] == body["id"] and "userId" not in ident
    seen = exposures(events)
    assert len(events) == 3 and len(seen) == 2
    assert {(e["properties"]["test_id"], e["properties"]["variant_id"]) for e in seen} == set(
        body["active"].items()
    )
    for event in events:
        assert event["anonymousId"] == body["id"]
        context = event["context"]
        assert context["page"]["url"] == "http://testserver/landing/spring?utm_source=news"
        assert context["page"]["path"] == "/landing/spring"
        assert context["campaign"] == {"source": "news"}
        assert context["userAgent"] == "testclient"
        assert context["ip"] == "testclient"
        assert context["locale"] == "de-DE"
    check_identity(ob)


def test_secure_cookie_only_on_https(ob: Optibase) -> None:
    with TestClient(site(ob), base_url="https://testserver") as secure_client:
        found = cookie_of(fetch(secure_client, "/"))
        assert found is not None and "secure" in found[1]
    with TestClient(site(ob)) as plain_client:
        found = cookie_of(fetch(plain_client, "/"))
        assert found is not None and "secure" not in found[1]


@pytest.mark.parametrize(
    ("setting", "base", "secure"), [(True, "http", True), (False, "https", False)]
)
def test_cookie_secure_setting_overrides_scheme(
    tmp_path: Path, setting: bool, base: str, secure: bool
) -> None:
    ob = make_optibase(tmp_path, cookie_secure=setting)
    with TestClient(site(ob), base_url=f"{base}://testserver") as client:
        found = cookie_of(fetch(client, "/"))
        assert found is not None and ("secure" in found[1]) is secure


def test_custom_cookie_name_and_max_age(tmp_path: Path) -> None:
    ob = make_optibase(tmp_path, cookie_name="ob_id", cookie_max_age=3600)
    with TestClient(site(ob)) as client:
        response = fetch(client, "/")
        values = response.headers.get_list("set-cookie")
        assert len(values) == 1 and values[0].startswith("ob_id=")
        assert "Max-Age=3600" in values[0]
        token = values[0].split(";")[0].split("=", 1)[1]
        client.cookies.clear()
        again = client.get("/", headers={"cookie": f"ob_id={token}"})
        assert again.json()["id"] == response.json()["id"]
        assert not again.headers.get_list("set-cookie")


# -- a returning visitor ------------------------------------------------------------------


def test_returning_visitor_gets_no_cookie_and_no_events(client: TestClient, ob: Optibase) -> None:
    first = fetch(client, "/landing/a")
    token = token_of(first)
    before = flushed(client, ob)
    for path in ("/landing/a", "/landing/b", "/"):
        again = fetch(client, path, token)
        assert again.status_code == 200
        assert set_cookies(again) == []
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["active"] == first.json()["active"]
    assert flushed(client, ob) == before


@pytest.mark.parametrize("repeated", ["cookie", "accept"])
def test_the_visitor_cookie_is_found_in_any_of_several_cookie_headers(
    client: TestClient, ob: Optibase, repeated: str
) -> None:
    """With a header name repeated, every Cookie header is read, not only one of them."""
    token, visitor_id, active = returning_visitor(client)
    ours = f"a=1; optibase_vid={token}"
    if repeated == "cookie":
        cookie_headers = [("cookie", ours), ("cookie", "b=2; optibase_vid_preview=hero%3Abold")]
    else:  # our cookie alone, but another header twice
        cookie_headers = [("accept", "text/html"), ("accept", "*/*"), ("cookie", ours)]
    client.cookies.clear()
    response = client.get("/", headers=httpx2.Headers(cookie_headers))
    assert response.json()["id"] == visitor_id
    if repeated == "cookie":  # the preview cookie, in the second header, is seen too
        assert response.json()["active"] == {**active, "hero": "bold"}
    else:
        assert set_cookies(response) == [] and response.json()["active"] == active


def test_sticky_across_restarts_with_the_same_key(tmp_path: Path) -> None:
    first_ob = make_optibase(tmp_path)
    with TestClient(site(first_ob)) as client:
        response = fetch(client, "/landing/a")
        token = token_of(response)
    second_ob = make_optibase(tmp_path, events_path=tmp_path / "second.jsonl")
    with TestClient(site(second_ob)) as client:
        again = fetch(client, "/landing/a", token)
        assert again.json() == response.json()
        assert set_cookies(again) == []
    assert read_events(second_ob) == []


def test_page_without_tests_has_no_cookie_and_no_event(client: TestClient, ob: Optibase) -> None:
    for path in ("/plain", "/landing/static"):
        response = fetch(client, path, method="HEAD" if path == "/landing/static" else "GET")
        assert response.status_code == 200
        assert set_cookies(response) == []
    response = fetch(client, "/plain")
    assert response.text == "static page" and set_cookies(response) == []
    assert flushed(client, ob) == []
    assert ob.stats()["accepted"] == 0


def test_html_page_without_tests_and_without_click_conversions(tmp_path: Path) -> None:
    ob = make_optibase(tmp_path, inject_script=False)
    with TestClient(site(ob)) as client:
        response = fetch(client, "/html")
        assert response.status_code == 200 and set_cookies(response) == []
        assert flushed(client, ob) == []


# -- get_visitor ----------------------------------------------------------------------------


def test_get_visitor_in_starlette_view(client: TestClient, ob: Optibase) -> None:
    token, visitor_id, active = returning_visitor(client)
    response = fetch(client, "/whoami", token)
    body = response.json()
    assert body["id"] == visitor_id
    assert body["active"] == active == {"hero": body["hero"]}
    assert body["hero"] in ("control", "bold")


def test_get_visitor_without_middleware_raises() -> None:
    with TestClient(site(None)) as client, pytest.raises(RuntimeError, match="OptibaseMiddleware"):
        client.get("/whoami")


def test_get_visitor_as_fastapi_dependency(ob: Optibase) -> None:
    app = FastAPI()
    app.add_middleware(OptibaseMiddleware, optibase=ob)

    @app.get("/")
    async def home(visitor: Visitor = Depends(get_visitor)) -> dict[str, Any]:  # noqa: B008
        return {
            "id": visitor.id,
            "hero": visitor.variant("hero"),
            "active": visitor.active_variants,
        }

    @app.get("/sync")
    def sync_view(visitor: Visitor = Depends(get_visitor)) -> dict[str, Any]:  # noqa: B008
        return {
            "id": visitor.id,
            "side": visitor.variant("side"),
            "active": visitor.active_variants,
        }

    with TestClient(app) as client:
        response = fetch(client, "/")
        body = response.json()
        record = CookieCodec([KEY]).decode(token_of(response))
        assert record is not None and record.visitor_id == body["id"]
        assert body["active"] == dict(record.assignments) == {"hero": body["hero"]}

        sync = fetch(client, "/sync", token_of(response))
        sync_body = sync.json()
        assert sync_body["id"] == body["id"]
        assert sync_body["active"] == {"hero": body["hero"], "side": sync_body["side"]}
        updated = CookieCodec([KEY]).decode(token_of(sync))
        assert updated is not None and dict(updated.assignments) == sync_body["active"]
        events = flushed(client, ob)
    assert len(identifies(events)) == 1
    assert sorted(e["properties"]["test_id"] for e in exposures(events)) == ["hero", "side"]


# -- variant() in a view ------------------------------------------------------------------


def test_variant_in_view_assigns_a_test_not_on_the_page(client: TestClient, ob: Optibase) -> None:
    token, visitor_id, active = returning_visitor(client)
    before = flushed(client, ob)
    response = fetch(client, "/assign/side", token)
    side = response.json()["variant"]
    assert side in ("left", "right")
    record = CookieCodec([KEY]).decode(token_of(response))
    assert record is not None and record.visitor_id == visitor_id
    assert dict(record.assignments) == {**active, "side": side}
    new_events = flushed(client, ob)[len(before) :]
    assert len(new_events) == 1
    (event,) = exposures(new_events)
    assert event["properties"]["test_id"] == "side"
    assert event["properties"]["variant_id"] == side
    assert event["anonymousId"] == visitor_id
    # and it sticks, with nothing more to say
    again = fetch(client, "/assign/side", token_of(response))
    assert again.json()["variant"] == side and set_cookies(again) == []
    assert len(flushed(client, ob)) == len(before) + 1


def test_variant_of_a_new_visitor_in_a_view(client: TestClient, ob: Optibase) -> None:
    response = fetch(client, "/assign/side")
    side = response.json()["variant"]
    record = CookieCodec([KEY]).decode(token_of(response))
    assert record is not None and dict(record.assignments) == {"side": side}
    events = flushed(client, ob)
    assert [e["type"] for e in events] == ["identify", "track"]
    assert events[1]["properties"]["variant_id"] == side


@pytest.mark.parametrize(
    ("test_id", "expected"),
    [("unknown", None), ("paused", None), ("done", "new"), ("nowinner", None)],
)
def test_not_running_tests(
    client: TestClient, ob: Optibase, test_id: str, expected: str | None
) -> None:
    response = fetch(client, f"/assign/{test_id}")
    assert response.json()["variant"] == expected
    assert set_cookies(response) == []
    assert flushed(client, ob) == []


def test_stopped_test_on_page_shows_winner_without_events(client: TestClient, ob: Optibase) -> None:
    token, _, _ = returning_visitor(client)
    before = flushed(client, ob)
    response = fetch(client, "/assign/done", token)
    assert response.json()["variant"] == "new"
    assert set_cookies(response) == []
    assert flushed(client, ob) == before


def test_active_variants_leave_out_tests_that_are_not_running(
    client: TestClient, ob: Optibase
) -> None:
    visitor_id = "6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a"
    token = CookieCodec([KEY]).encode(
        visitor_id,
        {"hero": "bold", "paused": "p1", "done": "old", "gone": "x", "side": "removed-variant"},
    )
    body = fetch(client, "/whoami", token).json()
    assert body["id"] == visitor_id
    assert body["active"] == {"hero": "bold"}


def test_stored_variant_that_no_longer_exists_is_reassigned(
    client: TestClient, ob: Optibase
) -> None:
    visitor_id = "6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a"
    token = CookieCodec([KEY]).encode(visitor_id, {"hero": "removed"})
    response = fetch(client, "/", token)
    body = response.json()
    assert body["hero"] in ("control", "bold")
    record = CookieCodec([KEY]).decode(token_of(response))
    assert record is not None and dict(record.assignments) == {"hero": body["hero"]}
    events = flushed(client, ob)
    assert [e["properties"]["variant_id"] for e in exposures(events)] == [body["hero"]]
    assert identifies(events) == []


# -- PAGE_VIEW conversions ----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_page_view_conversion_fires_on_get_2xx(
    client: TestClient, ob: Optibase, status: int
) -> None:
    token, visitor_id, active = returning_visitor(client)
    before = flushed(client, ob)
    response = fetch(client, f"/pricing?status={status}", token)
    assert response.status_code == status
    new = flushed(client, ob)[len(before) :]
    assert len(new) == 1
    (event,) = conversions(new)
    assert event["anonymousId"] == visitor_id
    props = event["properties"]
    assert props["conversion_id"] == "pricing"
    assert props["conversion_type"] == "PAGE_VIEW"
    assert props["origin_url"] == f"http://testserver/pricing?status={status}"
    assert props["variants"] == [{"test_id": t, "variant_id": v} for t, v in sorted(active.items())]
    assert set_cookies(response) == []  # a returning visitor's cookie did not change


@pytest.mark.parametrize(
    ("method", "status"),
    [("GET", 404), ("GET", 500), ("GET", 302), ("GET", 301), ("POST", 200), ("HEAD", 200)],
)
def test_page_view_conversion_does_not_fire(
    client: TestClient, ob: Optibase, method: str, status: int
) -> None:
    response = fetch(client, f"/pricing?status={status}", method=method, follow_redirects=False)
    assert response.status_code == status
    assert set_cookies(response) == []
    assert flushed(client, ob) == []


def test_page_view_conversion_for_a_new_visitor(client: TestClient, ob: Optibase) -> None:
    response = fetch(client, "/pricing")
    record = CookieCodec([KEY]).decode(token_of(response))
    assert record is not None
    events = flushed(client, ob)
    assert [e["type"] for e in events] == ["identify", "track"]
    assert events[1]["properties"]["conversion_id"] == "pricing"
    assert events[1]["properties"]["variants"] == []
    assert {e["anonymousId"] for e in events} == {record.visitor_id}


# -- programmatic conversions and identify --------------------------------------------------


def test_convert_in_a_view(client: TestClient, ob: Optibase) -> None:
    token, visitor_id, active = returning_visitor(client)
    before = flushed(client, ob)
    response = fetch(client, "/buy?times=2", token, method="POST")
    assert response.text == "bought"
    new = flushed(client, ob)[len(before) :]
    assert len(new) == 2
    for event in new:
        assert event["properties"]["conversion_id"] == "purchase"
        assert event["properties"]["conversion_type"] == "PROGRAMMATIC"
        assert event["properties"]["origin_url"] == "http://testserver/buy?times=2"
        assert event["properties"]["variants"] == [
            {"test_id": t, "variant_id": v} for t, v in sorted(active.items())
        ]
        assert event["anonymousId"] == visitor_id
    assert new[0]["messageId"] != new[1]["messageId"]  # not once-only: both count


def test_convert_unknown_id_names_it(client: TestClient, ob: Optibase) -> None:
    response = fetch(client, "/buy?conversion=no-such-goal")
    assert response.status_code == 400
    assert "no-such-goal" in response.text
    assert conversions(flushed(client, ob)) == []


def test_one_per_visitor_conversion_counts_once(client: TestClient, ob: Optibase) -> None:
    token, visitor_id, _ = returning_visitor(client)
    fetch(client, "/buy?conversion=newsletter&times=3", token)
    fetch(client, "/buy?conversion=newsletter", token)
    events = conversions(flushed(client, ob))
    assert len(events) == 1
    assert events[0]["properties"]["conversion_id"] == "newsletter"
    # another visitor converts too
    other_token, other_id, _ = returning_visitor(client)
    fetch(client, "/buy?conversion=newsletter", other_token)
    events = conversions(flushed(client, ob))
    assert [e["anonymousId"] for e in events] == [visitor_id, other_id]
    check_identity(ob)


def test_identify_attaches_user_id_once(client: TestClient, ob: Optibase) -> None:
    token, visitor_id, _ = returning_visitor(client)
    before = flushed(client, ob)
    first = fetch(client, "/identify", token)
    assert first.json() == {"id": visitor_id, "user_id": "u1"}
    fetch(client, "/identify", token)
    new = flushed(client, ob)[len(before) :]
    assert len(new) == 1
    (event,) = identifies(new)
    assert event["anonymousId"] == visitor_id
    assert event["userId"] == "u1"
    assert event["traits"] == {"plan": "pro", "名前": "ユーザー"}


@pytest.mark.anyio
async def test_convert_outside_a_request(tmp_path: Path) -> None:
    ob = make_optibase(tmp_path)
    try:
        await ob.convert(
            "purchase", visitor_id="v-123", user_id="u-9", origin_url="https://shop.example/x"
        )
        await ob.convert("purchase", user_id="u-9")
        await ob.convert("newsletter", user_id="u-9")
        await ob.convert("newsletter", user_id="u-9")
        with pytest.raises(ValueError, match="nope"):
            await ob.convert("nope", visitor_id="v-123")
        with pytest.raises(ValueError):
            await ob.convert("purchase")
        assert await ob.flush(5.0)
        events = read_events(ob)
    finally:
        await ob.aclose()
    assert len(events) == 3
    first, second, third = events
    assert first["anonymousId"] == "v-123" and first["userId"] == "u-9"
    assert first["properties"]["origin_url"] == "https://shop.example/x"
    assert first["properties"]["variants"] == []
    assert "anonymousId" not in second and second["userId"] == "u-9"
    assert third["properties"]["conversion_id"] == "newsletter"
    stats = check_identity(ob)
    assert stats["sent"] == 3 and stats["pending"] == 0


# -- hostile and old cookies ----------------------------------------------------------------


def test_tampered_cookie_gives_a_new_visitor(client: TestClient, ob: Optibase) -> None:
    token, visitor_id, _ = returning_visitor(client)
    flushed(client, ob)
    middle = len(token) // 3
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    for bad in (tampered, "garbage", "", token[:-3], "x" * 5000, token + "x"):
        response = fetch(client, "/", bad)
        assert response.status_code == 200
        new_id = response.json()["id"]
        assert new_id != visitor_id
        record = CookieCodec([KEY]).decode(token_of(response))
        assert record is not None and record.visitor_id == new_id


def test_non_ascii_cookie_header_is_harmless(client: TestClient) -> None:
    client.cookies.clear()
    response = client.get(
        "/", headers={b"cookie": "optibase_vid=caf\u00e9; other=1".encode("latin-1")}
    )
    assert response.status_code == 200
    assert token_of(response)


def test_key_rotation_resigns_old_cookies(tmp_path: Path) -> None:
    old_ob = make_optibase(tmp_path, secret_keys=[OLD_KEY], events_path=tmp_path / "old.jsonl")
    with TestClient(site(old_ob)) as client:
        first = fetch(client, "/")
        old_token = token_of(first)
    rotated = make_optibase(tmp_path, secret_keys=[OLD_KEY, NEW_KEY])
    with TestClient(site(rotated)) as client:
        response = fetch(client, "/", old_token)
        assert response.json() == first.json()
        new_token = token_of(response)
        assert new_token != old_token
        assert CookieCodec([NEW_KEY]).decode(new_token) is not None
        assert CookieCodec([OLD_KEY]).decode(new_token) is None
        record = CookieCodec([NEW_KEY]).decode(new_token)
        assert record is not None and record.visitor_id == first.json()["id"]
        assert dict(record.assignments) == first.json()["active"]
        # with the new token, nothing more to re-sign
        assert set_cookies(fetch(client, "/", new_token)) == []
        assert flushed(client, rotated) == []  # not a new visitor, nothing newly assigned
    # once the old key is retired, the old cookie means a new visitor
    retired = make_optibase(tmp_path, secret_keys=[NEW_KEY], events_path=tmp_path / "r.jsonl")
    with TestClient(site(retired)) as client:
        assert fetch(client, "/", old_token).json()["id"] != first.json()["id"]
        assert fetch(client, "/", new_token).json()["id"] == first.json()["id"]


# -- the app's own behaviour is untouched --------------------------------------------------


def test_streaming_response_arrives_intact(client: TestClient, ob: Optibase) -> None:
    bare = TestClient(site(None))
    expected = bare.get("/landing/stream")
    for path in ("/stream", "/landing/stream"):
        response = fetch(client, path)
        assert response.status_code == 200
        assert response.content == expected.content
        assert response.content == b"".join(f"chunk-{i};".encode() * (i + 1) for i in range(6))
    assert token_of(fetch(client, "/landing/stream"))  # a test page: the cookie still comes


@pytest.mark.parametrize("path", ["/landing/static", "/plain", "/pricing", "/nowhere"])
def test_head_behaves_like_the_bare_app(client: TestClient, ob: Optibase, path: str) -> None:
    bare = TestClient(site(None), raise_server_exceptions=False)
    expected = bare.head(path)
    response = fetch(client, path, method="HEAD")
    assert (response.status_code, response.content) == (expected.status_code, expected.content)
    assert dict(response.headers) == dict(expected.headers)
    assert flushed(client, ob) == []


def test_view_exception_propagates_unchanged(ob: Optibase) -> None:
    for path in ("/boom", "/landing/boom"):
        with (
            TestClient(site(None)) as bare,
            pytest.raises(RuntimeError, match="boom from the view"),
        ):
            bare.get(path)
        with (
            TestClient(site(ob)) as client,
            pytest.raises(RuntimeError, match="boom from the view"),
        ):
            client.get(path)


def test_server_error_response_is_the_apps(ob: Optibase) -> None:
    for path in ("/boom", "/landing/boom"):
        with TestClient(site(None), raise_server_exceptions=False) as bare:
            expected = bare.get(path)
        with TestClient(site(ob), raise_server_exceptions=False) as client:
            response = fetch(client, path)
        assert response.status_code == expected.status_code == 500
        assert response.content == expected.content
        assert dict(response.headers) == dict(expected.headers)


def test_background_tasks_run(client: TestClient) -> None:
    BACKGROUND_RAN.clear()
    response = fetch(client, "/bg?tag=first")
    assert response.text == "ok"
    assert BACKGROUND_RAN == ["first"]


def test_websocket_passes_through(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hello")
        assert ws.receive_json() == {"echo": "hello", "has_visitor": False}


def test_apps_own_lifespan_still_runs(ob: Optibase) -> None:
    calls: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        calls.append("startup")
        yield {"greeting": "hello"}
        calls.append("shutdown")

    async def from_state(request: Request) -> Response:
        return PlainTextResponse(request.state.greeting)

    app = site(ob, lifespan=lifespan)
    app.router.routes.append(Route("/state", from_state))
    with TestClient(app) as client:
        assert calls == ["startup"]
        assert client.get("/state").text == "hello"
    assert calls == ["startup", "shutdown"]


def test_lifespan_shutdown_flushes(tmp_path: Path) -> None:
    # a long batching interval: only the shutdown flush can have written these
    ob = make_optibase(tmp_path, flush_interval=60.0)
    with TestClient(site(ob)) as client:
        response = fetch(client, "/landing/x")
        assert read_events(ob) == []
        stats = check_identity(ob)
        assert stats["pending"] == 3
    events = read_events(ob)
    assert [e["type"] for e in events] == ["identify", "track", "track"]
    assert {e["anonymousId"] for e in events} == {response.json()["id"]}
    stats = check_identity(ob)
    assert stats["pending"] == 0 and stats["sent"] == 3


def test_library_failure_still_serves_the_page(
    ob: Optibase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: PageRules, path: str) -> Any:
        raise RuntimeError("for_path is broken")

    monkeypatch.setattr(PageRules, "for_path", broken)
    with caplog.at_level(logging.ERROR, logger="optibase_edge"), TestClient(site(ob)) as client:
        response = fetch(client, "/landing/static")
        assert response.status_code == 200 and response.text == "static page"
        response = fetch(client, "/")
        assert response.status_code == 200
        assert response.json()["hero"] in ("control", "bold")  # the view can still ask
    assert any("for_path is broken" in (r.exc_text or "") for r in caplog.records)


def test_failure_while_finishing_leaves_the_response_unchanged(
    ob: Optibase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Visitor) -> str | None:
        raise RuntimeError("cannot sign")

    monkeypatch.setattr(Visitor, "_cookie_token", broken)
    with TestClient(site(ob)) as client:
        response = fetch(client, "/landing/a")
        assert response.status_code == 200
        assert response.json()["hero"] in ("control", "bold")
        assert set_cookies(response) == []


def test_stats_identity_holds_throughout(tmp_path: Path) -> None:
    ob = make_optibase(tmp_path, flush_interval=0.01)
    with TestClient(site(ob)) as client:
        check_identity(ob)
        tokens = []
        for i in range(5):
            tokens.append(token_of(fetch(client, f"/landing/{i}")))
            check_identity(ob)
        for token in tokens:
            fetch(client, "/buy?conversion=newsletter&times=2", token)
            fetch(client, "/identify", token)
            fetch(client, "/identify", token)
            check_identity(ob)
        flushed(client, ob)
        stats = check_identity(ob)
        assert stats["pending"] == 0
        assert stats["sent"] == len(read_events(ob)) == 5 * 3 + 5 + 5
    check_identity(ob)


# -- over httpx2's ASGITransport (no lifespan: delivery starts on demand) --------------------


@pytest.mark.anyio
async def test_asgi_transport_concurrent_requests_expose_once(tmp_path: Path) -> None:
    ob = make_optibase(tmp_path)
    transport = httpx2.ASGITransport(app=site(ob))
    try:
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://testserver", headers=AS_A_BROWSER
        ) as http:
            first = await http.get("/")
            token = token_of(first)
            visitor_id = first.json()["id"]
            http.cookies.clear()
            results: list[httpx2.Response] = []

            async def hit() -> None:
                results.append(
                    await http.get("/assign/side", headers={"cookie": f"{COOKIE}={token}"})
                )

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(hit)
            sides = {r.json()["variant"] for r in results}
            assert len(sides) == 1 and sides <= {"left", "right"}
            assert await ob.flush(5.0)
    finally:
        await ob.aclose()
    events = read_events(ob)
    assert len(identifies(events)) == 1
    assert sorted(e["properties"]["test_id"] for e in exposures(events)) == ["hero", "side"]
    assert {e["anonymousId"] for e in events} == {visitor_id}
    check_identity(ob)


# -- contract gaps found while testing (strict xfail: they pass once fixed) ------------------


def test_bots_produce_no_events(client: TestClient, ob: Optibase) -> None:
    bot = {"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    response = fetch(client, "/landing/a", headers=bot)
    assert response.status_code == 200
    assert cookie_of(response) is None
    assert fetch(client, "/pricing", headers=bot).status_code == 200
    assert flushed(client, ob) == []


def test_a_bot_is_outside_every_test(client: TestClient) -> None:
    bot = {"user-agent": "Mozilla/5.0 AppleWebKit/537.36 (KHTML) HeadlessChrome/120.0 Safari"}
    response = fetch(client, "/landing/page", headers=bot)
    assert response.json()["hero"] is None
    assert response.json()["active"] == {}


def test_prefetches_produce_no_events(client: TestClient, ob: Optibase) -> None:
    response = fetch(client, "/landing/a", headers={"sec-purpose": "prefetch"})
    assert response.status_code == 200
    assert flushed(client, ob) == []


def test_a_prefetch_renders_the_variant_and_the_real_view_records_it(
    client: TestClient, ob: Optibase
) -> None:
    first = fetch(client, "/")
    token = token_of(first)
    flushed(client, ob)
    before = len(read_events(ob))
    # The visitor's browser prefetches a page with a test it has not seen yet.
    prefetch = fetch(client, "/landing/a", token, headers={"sec-purpose": "prefetch;prerender"})
    assert prefetch.status_code == 200
    assert cookie_of(prefetch) is None  # the assignment is not stored by a prefetch
    assert len(flushed(client, ob)) == before
    real = fetch(client, "/landing/a", token)
    record = CookieCodec([KEY]).decode(token_of(real))
    assert record is not None
    (cta,) = [e for e in exposures(flushed(client, ob)) if e["properties"]["test_id"] == "cta"]
    assert cta["properties"]["variant_id"] == record.assignments["cta"]


# -- under a root_path (uvicorn --root-path, or a mounted sub-app) -----------------------------


def test_pages_and_page_views_match_relative_to_root_path(ob: Optibase) -> None:
    # ASGI (and Starlette) convention: scope["path"] includes root_path; routes and
    # page patterns are relative to it.
    with TestClient(site(ob), root_path="/shop") as client:
        response = fetch(client, "/shop/landing/static")  # routed by Starlette as /landing/static
        assert response.status_code == 200
        record = CookieCodec([KEY]).decode(token_of(response))
        assert record is not None and set(record.assignments) == {"hero", "cta"}
        token = token_of(response)
        fetch(client, "/shop/pricing", token)
        events = flushed(client, ob)
    (conversion,) = conversions(events)
    assert conversion["properties"]["origin_url"] == "http://testserver/shop/pricing"
    assert exposures(events)[0]["context"]["page"] == {
        "url": "http://testserver/shop/landing/static",
        "path": "/shop/landing/static",
        "search": "",
        "referrer": "",
    }


def test_page_url_under_root_path_is_not_doubled(ob: Optibase) -> None:
    with TestClient(site(ob), root_path="/shop") as client:
        fetch(client, "/shop/whoami")
        events = flushed(client, ob)
    assert events and {e["context"]["page"]["url"] for e in events} == {
        "http://testserver/shop/whoami"
    }


def test_a_second_lifespan_delivers_again(ob: Optibase) -> None:
    app = site(ob)
    with TestClient(app) as first:
        fetch(first, "/")
    after_first = len(read_events(ob))
    assert after_first == 2  # identify + the hero exposure, flushed at shutdown
    with TestClient(app) as second:
        fetch(second, "/")
    assert len(read_events(ob)) == 2 * after_first
    stats = ob.stats()
    assert stats["sent"] == stats["accepted"] == 2 * after_first

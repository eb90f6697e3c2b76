"""First-visit events a full buffer refuses are emitted again, and beacons keep to their half.

Segment is slow here (a MockTransport that holds every batch until released),
and the buffer is small (``max_buffer_events=10``): what is queued stays
buffered, so filling it takes a handful of events. After every step the
accounting identity must hold.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import (
    Batch,
    Conversion,
    ConversionType,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._cookie import VisitorRecord, new_visitor_id
from optibase_edge._seen import key_digest
from tests.support.accounting import balanced

COOKIE = "optibase_vid"
KEY = "deferred-secret-0123456789abcdef-0123"
BUFFER = 10
PAGE = "http://testserver/"
HOLD_LIMIT = 10.0  # seconds a held batch may wait before the test is stuck anyway


class SlowSegment:
    """A MockTransport handler: holds every batch while :attr:`held`, then accepts it."""

    def __init__(self) -> None:
        self.held = True
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, batch: Batch) -> Outcome:
        deadline = time.monotonic() + HOLD_LIMIT
        while self.held and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.messages.extend(batch.decoded())
        return Outcome(200)

    def of(self, visitor_id: str, kind: str) -> list[dict[str, Any]]:
        """The messages of one visitor: ``identify``, or a track's event name."""
        return [
            m
            for m in self.messages
            if m.get("anonymousId") == visitor_id and kind in (m["type"], m.get("event"))
        ]


async def home(request: Request) -> HTMLResponse:
    visitor = get_visitor(request)
    return HTMLResponse(f"<p data-hero='{visitor.variant('hero')}'>{visitor.active_variants}</p>")


def side(request: Request) -> JSONResponse:
    # A sync view: it runs in a worker thread, so its exposure is handed to the loop.
    return JSONResponse({"side": get_visitor(request).variant("side")})


async def me(request: Request) -> JSONResponse:
    return JSONResponse({"id": get_visitor(request).id})  # who, and nothing else


async def buy(request: Request) -> JSONResponse:
    await get_visitor(request).convert("purchase")
    return JSONResponse({"ok": True})


@pytest.fixture
def segment() -> SlowSegment:
    return SlowSegment()


@pytest.fixture
def ob(segment: SlowSegment) -> Optibase:
    return Optibase(
        tests=[
            Test("hero", [Variant("control"), Variant("bold"), Variant("loud")], pages=["/"]),
            Test("side", [Variant("left"), Variant("right")]),
        ],
        conversions=[
            Conversion("signup", ConversionType.CLICK, selector="#signup"),
            Conversion("purchase", ConversionType.PROGRAMMATIC),
        ],
        secret_keys=[KEY],
        transport=MockTransport(segment),
        max_buffer_events=BUFFER,
        flush_interval=0.01,
        shutdown_timeout=0.5,
        # The reserve must hold on its own, whatever the collector's budgets let through.
        collector_visitor_budget=None,
        collector_ip_budget=None,
    )


@pytest.fixture
def client(ob: Optibase, segment: SlowSegment) -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/side", side),
            Route("/me", me),
            Route("/buy", buy, methods=["POST"]),
        ]
    )
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    with TestClient(app) as test_client:
        yield test_client
        segment.held = False  # lets the shutdown flush finish at once


def fetch(
    client: TestClient, path: str, token: str | None = None, method: str = "GET", **kwargs: Any
) -> httpx2.Response:
    """One request with exactly the cookie given (the client's jar is not used)."""
    client.cookies.clear()
    headers = {"cookie": f"{COOKIE}={token}"} if token is not None else {}
    response = client.request(method, path, headers=headers, **kwargs)
    client.cookies.clear()
    return response


def beacon(client: TestClient, token: str) -> httpx2.Response:
    return fetch(
        client,
        "/_optibase/collect",
        token,
        method="POST",
        json={"type": "click", "conversion_id": "signup", "url": PAGE},
    )


def written(ob: Optibase, response: httpx2.Response) -> tuple[str, VisitorRecord] | None:
    """The visitor cookie set on *response*, as its token and what the token says."""
    values = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")]
    if not values:
        return None
    token = values[0].split(";", 1)[0].split("=", 1)[1]
    record = ob._codec.decode(token)
    assert record is not None
    return token, record


def shown(response: httpx2.Response) -> str:
    return response.text.split("data-hero='")[1].split("'")[0]


def fill(client: TestClient, ob: Optibase, count: int) -> None:
    """*count* programmatic conversions, queued from the app's loop (Segment holds them)."""

    async def convert() -> None:
        for i in range(count):
            await ob.convert("purchase", visitor_id=f"filler-{i}")

    assert client.portal is not None
    client.portal.call(convert)


def drain(client: TestClient, ob: Optibase, segment: SlowSegment) -> None:
    """Segment recovers and everything queued is delivered."""
    segment.held = False
    assert client.portal is not None
    assert client.portal.call(ob.flush, 5.0) is True
    segment.held = True


def remembered(ob: Optibase, key: str) -> bool:
    return key_digest(key) in ob._seen._seen


def stats(client: TestClient, ob: Optibase) -> dict[str, int]:
    """The counters, read in the app's loop (where they move), balanced."""
    assert client.portal is not None
    current = client.portal.call(ob.stats)
    assert balanced(current), current
    return current


# -- a full buffer ------------------------------------------------------------------------


def test_a_new_visitor_refused_by_a_full_buffer_is_identified_on_the_next_request(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    fill(client, ob, BUFFER)
    assert stats(client, ob)["pending"] == BUFFER

    first = fetch(client, "/")
    variant = shown(first)
    assert variant in ("control", "bold", "loud")  # the page shows the variant all the same
    assert f"'hero': '{variant}'" in first.text  # and active_variants has it
    cookie = written(ob, first)
    assert cookie is not None, "the visitor keeps their ID"
    token, record = cookie
    visitor_id = record.visitor_id
    assert record.identify_owed and dict(record.assignments) == {}
    counts = stats(client, ob)
    # The Identify was refused; the exposure waits for it, unsent (Identify goes first).
    assert (counts["dropped"], counts["deferred"], counts["beacons_dropped"]) == (1, 1, 0)

    drain(client, ob, segment)
    second = fetch(client, "/", token)
    assert shown(second) == variant
    cookie = written(ob, second)
    assert cookie is not None
    token, record = cookie
    assert (record.visitor_id, record.identify_owed) == (visitor_id, False)
    assert dict(record.assignments) == {"hero": variant}

    third = fetch(client, "/", token)
    assert shown(third) == variant and written(ob, third) is None
    drain(client, ob, segment)
    assert len(segment.of(visitor_id, "identify")) == 1
    [exposure] = segment.of(visitor_id, "Experiment Viewed")
    assert exposure["properties"]["variant_id"] == variant
    # The Identify went first, as ever.
    mine = [m for m in segment.messages if m.get("anonymousId") == visitor_id]
    assert mine[0]["type"] == "identify"
    assert stats(client, ob)["deferred"] == 1


def test_an_owed_identify_alone_is_paid_and_its_mark_removed(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    fill(client, ob, BUFFER)
    token, record = written(ob, fetch(client, "/me")) or pytest.fail("no cookie")
    assert record.identify_owed and dict(record.assignments) == {}
    drain(client, ob, segment)

    cookie = written(ob, fetch(client, "/me", token))  # no test here: the mark is all there is
    assert cookie is not None and cookie[1] == VisitorRecord(record.visitor_id, {})
    assert written(ob, fetch(client, "/me", cookie[0])) is None
    drain(client, ob, segment)
    assert len(segment.of(record.visitor_id, "identify")) == 1
    stats(client, ob)


def test_a_new_visitors_exposure_refused_by_a_full_buffer_is_sent_next_time(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    fill(client, ob, BUFFER - 1)  # room for the Identify, not for the exposure

    first = fetch(client, "/")
    variant = shown(first)
    cookie = written(ob, first)
    assert cookie is not None
    token, record = cookie
    assert not record.identify_owed and dict(record.assignments) == {}
    assert stats(client, ob)["deferred"] == 1

    drain(client, ob, segment)
    second = fetch(client, "/", token)
    assert shown(second) == variant
    cookie = written(ob, second)
    assert cookie is not None and dict(cookie[1].assignments) == {"hero": variant}
    drain(client, ob, segment)
    assert len(segment.of(record.visitor_id, "identify")) == 1
    [exposure] = segment.of(record.visitor_id, "Experiment Viewed")
    assert exposure["properties"]["variant_id"] == variant
    stats(client, ob)


def test_an_owed_identify_sent_from_a_beacon_is_not_sent_again(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    fill(client, ob, BUFFER)
    token, record = written(ob, fetch(client, "/")) or pytest.fail("no cookie")
    assert record.identify_owed
    drain(client, ob, segment)

    # The collector writes no cookie, but the Identify it sends is remembered ...
    assert beacon(client, token).status_code == 204
    drain(client, ob, segment)
    assert len(segment.of(record.visitor_id, "identify")) == 1
    # ... so the next page takes the mark off without sending it twice.
    cookie = written(ob, fetch(client, "/", token))
    assert cookie is not None and not cookie[1].identify_owed
    drain(client, ob, segment)
    assert len(segment.of(record.visitor_id, "identify")) == 1
    assert len(segment.of(record.visitor_id, "Experiment Viewed")) == 1
    stats(client, ob)


def test_a_returning_visitors_exposure_refused_by_a_full_buffer_is_sent_next_time(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    visitor_id = new_visitor_id()
    token = ob._codec.encode(visitor_id, {})  # known, in no test yet
    fill(client, ob, BUFFER)

    first = fetch(client, "/", token)
    variant = shown(first)
    cookie = written(ob, first)
    assert cookie is None or "hero" not in cookie[1].assignments
    assert not remembered(ob, f"exposure\x1f{visitor_id}\x1fhero")
    assert stats(client, ob)["deferred"] == 1

    drain(client, ob, segment)
    second = fetch(client, "/", token)
    assert shown(second) == variant
    cookie = written(ob, second)
    assert cookie is not None and dict(cookie[1].assignments) == {"hero": variant}
    assert remembered(ob, f"exposure\x1f{visitor_id}\x1fhero")
    fetch(client, "/", cookie[0])
    drain(client, ob, segment)
    [exposure] = segment.of(visitor_id, "Experiment Viewed")
    assert exposure["properties"]["variant_id"] == variant
    assert segment.of(visitor_id, "identify") == []  # known before: no first Identify
    stats(client, ob)


def test_a_sync_views_exposure_refused_by_a_full_buffer_is_sent_next_time(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    # From a worker thread, submit answers from the room it sees before handing over.
    visitor_id = new_visitor_id()
    token = ob._codec.encode(visitor_id, {})
    fill(client, ob, BUFFER)

    first = fetch(client, "/side", token)
    variant = first.json()["side"]
    cookie = written(ob, first)
    assert cookie is None or "side" not in cookie[1].assignments
    assert not remembered(ob, f"exposure\x1f{visitor_id}\x1fside")

    drain(client, ob, segment)
    second = fetch(client, "/side", token)
    assert second.json()["side"] == variant
    cookie = written(ob, second)
    assert cookie is not None and dict(cookie[1].assignments) == {"side": variant}
    drain(client, ob, segment)
    [exposure] = segment.of(visitor_id, "Experiment Viewed")
    assert exposure["properties"]["variant_id"] == variant
    counts = stats(client, ob)
    assert counts["deferred"] == 1


# -- beacons keep to half the buffer ------------------------------------------------------


def test_beacons_are_refused_past_half_the_buffer_while_page_events_still_queue(
    client: TestClient, ob: Optibase, segment: SlowSegment
) -> None:
    flooder = ob._codec.encode(new_visitor_id(), {"hero": "control"})
    for _ in range(3 * BUFFER):
        assert beacon(client, flooder).status_code == 204  # answered as ever
    counts = stats(client, ob)
    assert counts["pending"] == BUFFER // 2
    assert counts["dropped"] == counts["beacons_dropped"] == 3 * BUFFER - BUFFER // 2
    assert counts["deferred"] == 0  # a repeatable conversion is not a once-only event

    # The other half is the page events': two new visitors' Identify and exposure ...
    newcomers = [written(ob, fetch(client, "/")) for _ in range(2)]
    assert all(
        c is not None and not c[1].identify_owed and "hero" in c[1].assignments for c in newcomers
    )
    # ... and a view's conversion: the whole buffer is theirs.
    assert fetch(client, "/buy", flooder, method="POST").status_code == 200
    assert stats(client, ob)["pending"] == BUFFER
    assert beacon(client, flooder).status_code == 204
    counts = stats(client, ob)
    assert counts["deferred"] == 0 and counts["beacons_dropped"] == 3 * BUFFER - BUFFER // 2 + 1

    drain(client, ob, segment)
    for cookie in newcomers:
        assert cookie is not None
        visitor_id = cookie[1].visitor_id
        assert len(segment.of(visitor_id, "identify")) == 1
        assert len(segment.of(visitor_id, "Experiment Viewed")) == 1
    converted = Counter(
        m["properties"]["conversion_id"]
        for m in segment.messages
        if m.get("event") == "Conversion Triggered"
    )
    assert converted == {"signup": BUFFER // 2, "purchase": 1}
    stats(client, ob)

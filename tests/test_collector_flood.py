"""A flood of beacons from one cookie, over real HTTP, cannot cost other visitors their data.

The site runs under uvicorn on 127.0.0.1 and reports to a capture server that
hangs (Segment being slow) until the test lets it recover, so everything the
site queues stays in its buffer of ``BUFFER`` events meanwhile. One visitor
posts ``FLOOD`` click beacons with a valid cookie while ``VISITORS`` new
visitors each load a page under a running test, their arrivals spread through
the flood. Beacons may take less than half the buffer; the other half is exactly
what the new visitors' Identify and Experiment Viewed need, so all of them are
queued, and delivered once Segment recovers. Then every visitor comes back,
and at the sink each has exactly one Identify and one Experiment Viewed.

It runs twice: with the collector's budgets off, where the reserve alone must
protect page events, and with the default budgets, which answer most flood
posts 429 instead of 204.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
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
from optibase_edge._cookie import CookieCodec, new_visitor_id
from tests.support.accounting import balanced
from tests.support.capture import SegmentCapture
from tests.support.server import serve
from tests.support.user_agents import AS_A_BROWSER

pytestmark = pytest.mark.anyio

WRITE_KEY = "wk-flood"
SECRET = "flood-secret-" + "f" * 32
COOKIE = "optibase_vid"
BUFFER = 200
VISITORS = 50  # two page events each: exactly the half of the buffer beacons may not take
FLOOD = 5_000
CONCURRENCY = 8  # posts in flight at once (more costs CPU, not speed)
DEADLINE = 30.0  # seconds the whole exchange may take (about 7 on a 2-core VM)


def build_site(segment_endpoint: str, budgets: bool) -> Starlette:
    unlimited: dict[str, Any] = (
        {} if budgets else {"collector_visitor_budget": None, "collector_ip_budget": None}
    )
    ob = Optibase(
        tests=[Test("hero", [Variant("control"), Variant("bold")], pages=["/"])],
        conversions=[Conversion("cta", ConversionType.CLICK, selector=".cta")],
        secret_keys=[SECRET],
        segment_write_key=WRITE_KEY,
        segment_endpoint=segment_endpoint,
        max_buffer_events=BUFFER,
        flush_interval=0.05,
        request_timeout=DEADLINE,  # a hanging Segment is waited for, not retried
        shutdown_timeout=1.0,
        **unlimited,
    )

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<p class=cta data-hero='{get_visitor(request).variant('hero')}'>")

    async def flush(request: Request) -> JSONResponse:
        return JSONResponse({"flushed": await ob.flush(timeout=10), "stats": ob.stats()})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(ob.stats())  # read in the loop where the counters move

    app = Starlette(routes=[Route("/", home), Route("/flush", flush), Route("/stats", stats)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app


@pytest.fixture
def segment() -> Iterator[SegmentCapture]:
    with SegmentCapture(write_key=WRITE_KEY, hang_seconds=DEADLINE) as capture:
        yield capture


Visit = tuple[str, str]  # the cookie a first visit got, and the variant it showed


def shown(response: httpx2.Response) -> str:
    return response.text.split("data-hero='")[1].split("'")[0]


def cookie_set(response: httpx2.Response) -> str | None:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(f"{COOKIE}="):
            return value.split(";", 1)[0].split("=", 1)[1]
    return None


@pytest.mark.parametrize("budgets", [False, True], ids=["reserve-alone", "default-budgets"])
async def test_a_beacon_flood_leaves_room_for_every_new_visitors_first_events(
    segment: SegmentCapture, budgets: bool
) -> None:
    segment.push("hang", "hang", "hang", "hang")  # as many requests as the 4 slots allow: held
    app = build_site(segment.url, budgets)
    flooder = CookieCodec([SECRET]).encode(new_visitor_id(), {"hero": "control"})
    with serve(app, lifespan="on") as url:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                httpx2.AsyncClient(
                    base_url=url,
                    headers=AS_A_BROWSER,
                    cookies={COOKIE: flooder},
                    limits=httpx2.Limits(max_connections=CONCURRENCY),
                    timeout=DEADLINE,
                )
            )
            # Each new visitor is a browser with a cookie jar of its own; one connection
            # pool serves them all (a pool of its own each costs a TLS context: seconds).
            pool = await stack.enter_async_context(httpx2.AsyncHTTPTransport())
            visitors = [
                await stack.enter_async_context(
                    httpx2.AsyncClient(
                        base_url=url, headers=AS_A_BROWSER, transport=pool, timeout=DEADLINE
                    )
                )
                for _ in range(VISITORS)
            ]
            posted: Counter[int] = Counter()
            beacon = {"type": "click", "conversion_id": "cta", "url": f"{url}/"}
            # Visitor i arrives once 200 + i * spread posts are answered: through the flood.
            spread = (FLOOD - 400) // VISITORS
            arrivals = {200 + i * spread: asyncio.Event() for i in range(VISITORS)}

            async def flood(posts: Iterator[int]) -> None:
                for _ in posts:  # shared by the workers: each post is taken once
                    response = await client.post("/_optibase/collect", json=beacon)
                    posted[response.status_code] += 1
                    arrival = arrivals.get(posted.total())
                    if arrival is not None:
                        arrival.set()

            async def first_visit(visitor: httpx2.AsyncClient, arrival: asyncio.Event) -> Visit:
                await arrival.wait()
                response = await visitor.get("/")
                token = cookie_set(response)
                assert response.status_code == 200 and token is not None
                return token, shown(response)

            async with asyncio.timeout(DEADLINE):
                posts = iter(range(FLOOD))
                flooding = [asyncio.create_task(flood(posts)) for _ in range(CONCURRENCY)]
                firsts = await asyncio.gather(*map(first_visit, visitors, arrivals.values()))
                await asyncio.gather(*flooding)

                assert set(posted) <= {204, 429} and posted.total() == FLOOD, posted
                assert segment.hanging and segment.messages == []  # Segment took nothing yet
                stats = (await client.get("/stats")).json()
                # Beacons had less than half the buffer (all of it still held) ...
                assert stats["beacons_dropped"] >= posted[204] - BUFFER // 2, stats
                # ... and every new visitor's first events were queued: none deferred.
                assert stats["deferred"] == 0 and stats["pending"] <= BUFFER, stats
                codec = CookieCodec([SECRET])
                records = [codec.decode(token) for token, _ in firsts]
                assert all(r is not None and not r.identify_owed and r.assignments for r in records)

                segment.recover()
                assert (await client.get("/flush")).json()["flushed"] is True
                identified = {m["anonymousId"] for m in segment.messages if m["type"] == "identify"}
                assert len(identified) == VISITORS  # delivered before anyone came back
                returns = [await visitor.get("/") for visitor in visitors]
                assert [shown(r) for r in returns] == [variant for _, variant in firsts]
                assert all(cookie_set(r) is None for r in returns)  # nothing new to record
                final = (await client.get("/flush")).json()
    assert final["flushed"] is True and balanced(final["stats"]), final

    identifies: Counter[str] = Counter()
    exposures: Counter[str] = Counter()
    for message in {m["messageId"]: m for m in segment.messages}.values():
        if message["type"] == "identify":
            identifies[message["anonymousId"]] += 1
        elif message.get("event") == "Experiment Viewed":
            exposures[message["anonymousId"]] += 1
    visitor_ids = {r.visitor_id for r in records if r is not None}
    assert len(visitor_ids) == VISITORS
    assert identifies == exposures == Counter(visitor_ids)  # one each; none for the flooder

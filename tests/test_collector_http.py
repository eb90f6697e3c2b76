"""The collector's limits over real HTTP: budgets under a flood, and a body that trickles in."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from optibase_edge import (
    Batch,
    Conversion,
    ConversionType,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
)
from optibase_edge import _endpoints as endpoints
from optibase_edge._cookie import new_visitor_id
from tests.support.server import serve
from tests.support.user_agents import DESKTOP_USER_AGENT

COLLECT = "/_optibase/collect"


class Site:
    """A site behind a proxy on 127.0.0.1, its Segment messages kept in memory.

    The proxy is trusted (uvicorn, by default, believes 127.0.0.1's X-Forwarded-For
    too), so each client is its own address.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.ob = Optibase(
            conversions=[Conversion("cta", ConversionType.CLICK, selector=".cta")],
            secret_keys=["collector-http-secret-0123456789abcdef"],
            transport=MockTransport(self._record),
            trusted_proxies=["127.0.0.1/32"],
            flush_interval=0.05,
        )

        async def flush(request: Request) -> JSONResponse:
            return JSONResponse({"flushed": await self.ob.flush(timeout=5)})

        app = Starlette(routes=[Route("/flush", flush, methods=["POST"])])
        app.add_middleware(OptibaseMiddleware, optibase=self.ob)
        self.app = app

    def _record(self, batch: Batch) -> Outcome:
        self.messages.extend(batch.decoded())
        return Outcome(200)

    def cookie(self) -> str:
        return f"optibase_vid={self.ob._codec.encode(new_visitor_id(), {})}"

    def conversions(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == "Conversion Triggered"]


@pytest.fixture
def site() -> Site:
    return Site()


@pytest.fixture
def base_url(site: Site) -> Iterator[str]:
    with serve(site.app) as url:
        yield url


def browser(base_url: str, cookie: str, address: str) -> httpx2.Client:
    """A person's browser (or a script posing as one) at *address*, behind the proxy."""
    return httpx2.Client(
        base_url=base_url,
        timeout=10,
        headers={
            "user-agent": DESKTOP_USER_AGENT,
            "cookie": cookie,
            "x-forwarded-for": address,
            "x-forwarded-proto": "http",
        },
    )


def click_body(base_url: str) -> dict[str, str]:
    return {"type": "click", "conversion_id": "cta", "url": f"{base_url}/landing"}


def test_a_flood_from_one_cookie_is_cut_to_its_budget_and_a_person_clicking_is_not(
    site: Site, base_url: str
) -> None:
    body = click_body(base_url)
    person_statuses: list[int] = []
    flood_done = threading.Event()

    def person() -> None:
        with browser(base_url, site.cookie(), "198.51.100.2") as client:
            # Twice a second, brisker than anyone clicks for long: within the budget for 40
            # clicks (20 at once, then one a second), so 30 at most, whatever the machine.
            while len(person_statuses) < 30 and not (flood_done.is_set() and person_statuses):
                person_statuses.append(client.post(COLLECT, json=body).status_code)
                time.sleep(0.5)

    clicking = threading.Thread(target=person)
    clicking.start()
    flood: list[httpx2.Response] = []
    started = time.monotonic()
    try:
        with browser(base_url, site.cookie(), "203.0.113.7") as script:
            flood = [script.post(COLLECT, json=body) for _ in range(2_000)]
    finally:
        elapsed = time.monotonic() - started
        flood_done.set()
        clicking.join(30)

    statuses = [r.status_code for r in flood]
    assert set(statuses) == {204, 429}
    assert statuses[:20] == [204] * 20  # the burst
    # Then a token a second, at most (a rounding's worth of slack).
    assert statuses.count(204) <= 20 + elapsed * 1.0 + 1
    for refused in (r for r in flood if r.status_code == 429):
        assert int(refused.headers["retry-after"]) >= 1
    assert person_statuses and set(person_statuses) == {204}

    with httpx2.Client(base_url=base_url) as client:
        assert client.post("/flush").json() == {"flushed": True}
    accepted = statuses.count(204) + person_statuses.count(204)
    assert len(site.conversions()) == accepted


def test_a_body_that_trickles_in_is_cut_off_with_408(
    site: Site, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert endpoints.BODY_DEADLINE == 5.0
    monkeypatch.setattr(endpoints, "BODY_DEADLINE", 1.0)  # read at each request: a faster test
    body = json.dumps(click_body(base_url)).encode()
    answer, elapsed = trickle(base_url, site.cookie(), body, gap=0.2)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert 1.0 <= elapsed < 2.5
    assert site.conversions() == []


def test_a_slow_body_that_arrives_within_the_deadline_is_read(
    site: Site, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoints, "BODY_DEADLINE", 3.0)
    body = json.dumps(click_body(base_url)).encode()
    chunk = len(body) // 4 + 1
    answer, _ = trickle(base_url, site.cookie(), body, gap=0.2, chunk=chunk)  # about 0.8 s
    assert answer.startswith(b"HTTP/1.1 204 "), answer


def trickle(
    base_url: str, cookie: str, body: bytes, *, gap: float, chunk: int = 1
) -> tuple[bytes, float]:
    """POST *body* over a raw socket, *chunk* bytes every *gap* seconds, until answered.

    Returns the answer's first bytes and the seconds from the first body byte to the
    answer. Gives up after 8 s: without a deadline the server would wait for ever.
    """
    address = urlsplit(base_url)
    assert address.hostname is not None and address.port is not None
    head = (
        f"POST {COLLECT} HTTP/1.1\r\nhost: {address.netloc}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"user-agent: {DESKTOP_USER_AGENT}\r\ncookie: {cookie}\r\n\r\n"
    ).encode()
    with socket.create_connection((address.hostname, address.port), timeout=gap) as sock:
        sock.sendall(head)
        started = time.monotonic()
        rest = body
        while time.monotonic() - started < 8:
            if rest:
                sock.sendall(rest[:chunk])
                rest = rest[chunk:]
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            return answer, time.monotonic() - started
    pytest.fail("no answer within 8 s")

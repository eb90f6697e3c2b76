"""End-to-end delivery under faults: the real SegmentTransport (httpx2, gzip, Basic
auth) against ``tests.support.capture`` under uvicorn on 127.0.0.1.

Every wait is bounded; backoff is scaled down where the test runs in-process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from optibase_edge import (
    Conversion,
    ConversionType,
    DedupeStore,
    MemoryStore,
    Optibase,
    OptibaseMiddleware,
    SegmentTransport,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._delivery import retry
from optibase_edge._delivery.sender import Delivery
from optibase_edge._events import Event
from optibase_edge._segment import message_id
from optibase_edge._settings import Settings
from tests.support.accounting import balanced
from tests.support.capture import BAD_MARKER, SegmentCapture
from tests.support.closing_server import ClosingServer
from tests.support.events import conversion, conversions, identify
from tests.support.net import free_port
from tests.support.polling import wait_until_async
from tests.support.server import serve
from tests.support.servers import kill_group, uvicorn_workers
from tests.support.user_agents import AS_A_BROWSER

pytestmark = pytest.mark.anyio

WRITE_KEY = "wk-Zq9-never-in-logs"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sink() -> Iterator[SegmentCapture]:
    with SegmentCapture(write_key=WRITE_KEY, hang_seconds=4.0) as server:
        yield server


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(retry, "BACKOFF_CAP", 0.3)


def make_ob(endpoint: str, **settings: Any) -> Optibase:
    defaults: dict[str, Any] = {
        "flush_interval": 0.05,
        "request_timeout": 2.0,
        "retry_max_time": 5.0,
        "shutdown_timeout": 2.0,
    }
    return Optibase(
        tests=[Test(id="hero", variants=[Variant("control"), Variant("bold")], pages=["/"])],
        conversions=[Conversion("purchase", ConversionType.PROGRAMMATIC)],
        segment_write_key=WRITE_KEY,
        secret_keys=["s" * 32],
        segment_endpoint=endpoint,
        **{**defaults, **settings},
    )


def make_delivery(
    endpoint: str, *, dedupe_store: DedupeStore | None = None, **settings: Any
) -> Delivery:
    """The delivery Optibase would build for *endpoint*: the real SegmentTransport."""
    defaults: dict[str, Any] = {
        "flush_interval": 0.05,
        "request_timeout": 2.0,
        "retry_max_time": 5.0,
        "shutdown_timeout": 2.0,
    }
    resolved = Settings(
        secret_keys=("s" * 32,), segment_write_key=WRITE_KEY, **{**defaults, **settings}
    )
    transport = SegmentTransport(WRITE_KEY, base_url=endpoint, timeout=resolved.request_timeout)
    return Delivery(resolved, transport, MemoryStore() if dedupe_store is None else dedupe_store)


def ids(events: Sequence[Event]) -> set[str]:
    return {message_id(e) for e in events}


@asynccontextmanager
async def watching(ob: Delivery | Optibase) -> AsyncIterator[list[dict[str, int]]]:
    """Sample ob.stats() every few ms while the body runs; fail on any broken identity."""
    samples: list[dict[str, int]] = []

    async def sample() -> None:
        for _ in range(20_000):
            samples.append(ob.stats())
            await asyncio.sleep(0.003)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        samples.append(ob.stats())
    broken = [s for s in samples if not balanced(s)]
    assert len(samples) > 5 and not broken, broken[:3]


def check_sink(sink: SegmentCapture) -> None:
    """What every request to the sink must have been: authenticated, within limits."""
    assert sink.bad_auth == 0
    for seen in sink.requests:
        assert seen.events <= 2500 and seen.body_bytes <= 500_000
        assert seen.sent_at and seen.sent_at.endswith("Z")


# -- retries --------------------------------------------------------------------------


async def test_transient_500s_then_every_event_arrives(sink: SegmentCapture) -> None:
    sink.push("500", "503", "502")
    ob = make_delivery(sink.url)
    batch = conversions(60)
    async with watching(ob):
        for event in batch[:30]:
            ob.submit(event)
        ob.submit(conversion("v-programmatic"))
        await asyncio.sleep(0.1)
        for event in batch[30:]:
            ob.submit(event)
        assert await ob.flush(10)
    stats = ob.stats()
    assert (stats["accepted"], stats["sent"], stats["pending"]) == (61, 61, 0)
    assert stats["retried"] >= 3
    received = sink.message_ids()
    assert ids(batch) <= received and len(received) == 61
    assert any(m.get("anonymousId") == "v-programmatic" for m in sink.messages)
    check_sink(sink)
    await ob.aclose()


async def test_retry_after_is_honoured(sink: SegmentCapture) -> None:
    sink.push("429:1")
    ob = make_delivery(sink.url)
    batch = conversions(5)
    for event in batch:
        ob.submit(event)
    assert await ob.flush(5)
    first, second = sink.requests[:2]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.95  # Retry-After: 1
    assert first.message_ids == second.message_ids  # same messageIds, fresh sentAt
    assert first.sent_at != second.sent_at
    await ob.aclose()


async def test_connection_closed_mid_response_is_retried(sink: SegmentCapture) -> None:
    sink.push("close", "close")
    ob = make_delivery(sink.url)
    batch = conversions(10)
    async with watching(ob):
        for event in batch:
            ob.submit(event)
        assert await ob.flush(5)
    assert ids(batch) <= sink.message_ids()
    assert ob.stats()["retried"] == 2
    await ob.aclose()


async def test_a_peer_that_closes_without_answering_is_retried_then_given_up() -> None:
    with ClosingServer() as peer:
        ob = make_delivery(peer.url, retry_max_time=0.6)
        async with watching(ob):
            for event in conversions(4):
                ob.submit(event)
            assert await ob.flush(5)
        stats = ob.stats()
        assert (stats["failed"], stats["sent"], stats["pending"]) == (4, 0, 0)
        assert stats["retried"] >= 2 and peer.connections >= 3
        await ob.aclose()


async def test_a_bad_event_is_isolated_and_the_rest_delivered(sink: SegmentCapture) -> None:
    ob = make_delivery(sink.url)
    good = conversions(40, "g")
    bad = conversions(1, "b", marker=BAD_MARKER)
    async with watching(ob):
        for event in good[:17] + bad + good[17:]:
            ob.submit(event)
        assert await ob.flush(5)
    stats = ob.stats()
    assert (stats["sent"], stats["failed"], stats["pending"]) == (40, 1, 0)
    assert sink.message_ids() == ids(good)
    assert len(sink.requests) <= 2 * 6 + 1  # halving, not one request per event
    check_sink(sink)
    await ob.aclose()


# -- no head-of-line blocking -----------------------------------------------------------


async def test_a_hanging_request_does_not_block_new_batches(sink: SegmentCapture) -> None:
    sink.push("hang")
    ob = make_delivery(sink.url, request_timeout=1.0, max_in_flight=2)
    first, second = conversions(5, "a"), conversions(5, "b")
    async with watching(ob):
        for event in first:
            ob.submit(event)
        await wait_until_async(lambda: sink.hanging == 1, "a hanging request", timeout=5)
        for event in second:
            ob.submit(event)
        await wait_until_async(
            lambda: ids(second) <= sink.message_ids(), "the second batch", timeout=3
        )
        assert sink.hanging == 1  # delivered while the first request still hangs
        assert await ob.flush(5)  # the first is retried after the client timeout
    assert ids(first) | ids(second) <= sink.message_ids()
    assert ob.stats()["retried"] >= 1
    await ob.aclose()


def site(ob: Optibase) -> Starlette:
    """A Starlette site with OptibaseMiddleware (its lifespan starts and stops *ob*)."""

    async def page(request: Request) -> PlainTextResponse:
        visitor = get_visitor(request)
        return PlainTextResponse(f"{visitor.id} {visitor.variant('hero')}")

    return Starlette(
        routes=[Route("/", page)], middleware=[Middleware(OptibaseMiddleware, optibase=ob)]
    )


async def test_the_site_keeps_answering_while_the_sink_hangs(sink: SegmentCapture) -> None:
    sink.push(*["hang"] * 50)
    ob = make_ob(sink.url, request_timeout=2.0, shutdown_timeout=0.3)
    latencies: list[float] = []
    with serve(site(ob), lifespan="on") as url:
        async with httpx2.AsyncClient(timeout=10, headers=AS_A_BROWSER) as client:
            for _ in range(30):
                started = time.monotonic()
                response = await client.get(url + "/")
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
                client.cookies.clear()  # a new visitor each time: 2 events per page
                await asyncio.sleep(0.01)
            await wait_until_async(lambda: sink.hanging >= 1, "a hanging request", timeout=5)
            for _ in range(10):  # and still, while requests to the sink hang
                started = time.monotonic()
                assert (await client.get(url + "/")).status_code == 200
                latencies.append(time.monotonic() - started)
                client.cookies.clear()
    # Loose: a page never waits for the sink (which would take seconds here).
    assert max(latencies) < 1.0, latencies
    stats = ob.stats()
    assert stats["accepted"] == 80 and balanced(stats)


# -- backpressure and limits ------------------------------------------------------------


async def test_buffer_full_drops_and_submit_stays_fast() -> None:
    ob = make_delivery(f"http://127.0.0.1:{free_port()}", max_buffer_events=200)
    batch = conversions(5000)
    started = time.perf_counter()
    for event in batch:
        ob.submit(event)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed  # ~1 µs a call in practice; generous on a busy machine
    stats = ob.stats()
    assert (stats["dropped"], stats["pending"]) == (4800, 200) and balanced(stats)
    await ob.aclose(timeout=0)


async def test_oversize_event_is_dropped_and_counted(sink: SegmentCapture) -> None:
    ob = make_delivery(sink.url)
    huge = identify("v-huge", traits={"blob": "h" * 40_000})
    normal = conversions(3)
    batch: list[Event] = [huge, *normal]
    for event in batch:
        ob.submit(event)
    assert await ob.flush(5)
    stats = ob.stats()
    assert (stats["oversized"], stats["dropped"], stats["sent"]) == (1, 1, 3)
    assert message_id(huge) not in sink.message_ids()
    await ob.aclose()


async def test_requests_stay_within_segment_limits(sink: SegmentCapture) -> None:
    ob = make_delivery(sink.url, max_batch_events=5000, max_buffer_bytes=64 << 20)
    small = [identify(f"s{i}") for i in range(2600)]
    big = [identify(f"b{i}", traits={"pad": "p" * 25_000}) for i in range(50)]
    for event in (*small, *big):
        ob.submit(event)
    assert await ob.flush(10)
    requests = sink.requests
    assert len(requests) >= 4
    check_sink(sink)  # every request <= 2,500 events and <= 500,000 bytes
    assert sink.message_ids() == ids([*small, *big])
    await ob.aclose()


# -- logs -----------------------------------------------------------------------------


async def test_the_write_key_never_appears_in_logs(
    sink: SegmentCapture, caplog: pytest.LogCaptureFixture
) -> None:
    class LeakyStore:
        async def claim(self, key: str, ttl: float) -> bool:
            raise ConnectionError(f"redis://:{WRITE_KEY}@127.0.0.1:1 refused")

        async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
            raise ConnectionError(f"redis://:{WRITE_KEY}@127.0.0.1:1 refused")

        async def aclose(self) -> None:
            return None

    caplog.set_level(logging.DEBUG)
    sink.push("500", "401", "close")
    ob = make_delivery(sink.url, dedupe_store=LeakyStore(), retry_max_time=1.0)
    batch: list[Event] = [
        *conversions(3),
        identify("v1"),
        identify("v2", traits={"blob": "x" * 40_000}),
        *conversions(1, marker=BAD_MARKER),
    ]
    for event in batch:
        ob.submit(event)
    await ob.flush(5)
    dead = make_delivery(f"http://{WRITE_KEY}@127.0.0.1:{free_port()}", retry_max_time=0.3)
    dead.submit(conversions(1)[0])
    await dead.flush(3)
    await dead.aclose(timeout=0)
    await ob.aclose()
    assert ob.stats()["store_errors"] >= 1 and caplog.records
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()  # the Basic-auth form
    assert WRITE_KEY not in caplog.text and token not in caplog.text


# -- shutdown and the spool -------------------------------------------------------------

SECOND_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    from optibase_edge import Optibase

    async def main():
        ob = Optibase(secret_keys=["s" * 32], segment_write_key=sys.argv[1],
                      segment_endpoint=sys.argv[2], spool_path=sys.argv[3],
                      flush_interval=0.05, request_timeout=2.0)
        await ob.start()
        ok = await ob.flush(10)
        await ob.aclose()
        print(json.dumps({"ok": ok, **ob.stats()}))

    asyncio.run(main())
    """
)


async def test_spooled_at_shutdown_delivered_by_the_next_process(
    sink: SegmentCapture, tmp_path: Path
) -> None:
    spool = tmp_path / "optibase.spool"
    down = make_delivery(f"http://127.0.0.1:{free_port()}", spool_path=spool)
    batch = conversions(30)
    async with watching(down):
        for event in batch[:20]:
            down.submit(event)
        await asyncio.sleep(0.2)  # these are in backoff by now
        for event in batch[20:]:
            down.submit(event)  # these still buffered
        await down.aclose(timeout=0.3)
    stats = down.stats()
    assert (stats["spooled"], stats["pending"], stats["sent"]) == (30, 30, 0)
    with open(spool, "ab") as file:
        file.write(b'{"type":"track","messageId":"ob-torn-by-a-cr')  # a crash mid-write

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SECOND_PROCESS, WRITE_KEY, sink.url, str(spool)],
        capture_output=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr.decode()
    second = json.loads(result.stdout.decode().splitlines()[-1])
    assert second["ok"] is True
    assert (second["restored"], second["sent"], second["pending"]) == (30, 30, 0)
    assert sink.message_ids() == ids(batch)
    assert not spool.exists()
    check_sink(sink)


MULTI_WORKER_APP = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from optibase_edge import Optibase, OptibaseMiddleware, Test, Variant, get_visitor

    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("control"), Variant("bold")], pages=["/"])],
        secret_keys=["s" * 32],
        segment_write_key=os.environ["TEST_WRITE_KEY"],
        segment_endpoint=os.environ["TEST_SINK"],
        flush_interval=0.05,
    )

    async def page(request):
        return PlainTextResponse(f"{get_visitor(request).id} {os.getpid()}")

    async def health(request):
        return PlainTextResponse(str(os.getpid()))

    app = Starlette(
        routes=[Route("/", page), Route("/health", health)],
        middleware=[Middleware(OptibaseMiddleware, optibase=ob)],
    )
    """
)


async def test_each_worker_of_uvicorn_workers_2_delivers_its_own_events(
    sink: SegmentCapture, tmp_path: Path
) -> None:
    (tmp_path / "multi_worker_app.py").write_text(MULTI_WORKER_APP)
    env = {
        **os.environ,
        "TEST_WRITE_KEY": WRITE_KEY,
        "TEST_SINK": sink.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
    }
    log = open(tmp_path / "uvicorn.log", "wb")  # noqa: SIM115 - closed below
    proc, url = uvicorn_workers("multi_worker_app:app", 2, env, log, tmp_path)
    visitors: dict[str, str] = {}
    workers: set[str] = set()

    async def both_workers_up() -> bool:  # each answers /health (and emits nothing)
        assert proc.poll() is None, "uvicorn exited"
        try:
            async with httpx2.AsyncClient(timeout=5) as fresh:  # a fresh connection
                workers.add((await fresh.get(url + "/health")).text)
        except httpx2.TransportError:
            pass
        return len(workers) == 2

    try:
        await wait_until_async(both_workers_up, "both workers", timeout=20, interval=0.1)
        for _ in range(60):
            # A fresh connection and no cookie each time: a new visitor, either worker.
            async with httpx2.AsyncClient(timeout=5, headers=AS_A_BROWSER) as fresh:
                visitor, pid = (await fresh.get(url + "/")).text.split()
                visitors[visitor] = pid
        proc.send_signal(signal.SIGTERM)  # graceful: each worker's lifespan shutdown flushes
        await asyncio.to_thread(proc.wait, 20)
    finally:
        kill_group(proc)
        log.close()
    output = (tmp_path / "uvicorn.log").read_text(errors="replace")
    assert proc.returncode == 0, output
    assert len(visitors) == 60
    identified = {m["anonymousId"] for m in sink.messages if m["type"] == "identify"}
    viewed = {m["anonymousId"] for m in sink.messages if m.get("event") == "Experiment Viewed"}
    assert identified == set(visitors) and viewed == set(visitors), output
    assert set(visitors.values()) == workers  # both workers served pages, and sent them
    check_sink(sink)

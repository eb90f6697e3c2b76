"""The spool as a Redis list (``spool_path="redis://..."``), against a real redis-server.

A host that is replaced loses its disk; a Redis list does not. What one
Delivery leaves there (at shutdown, or while its buffer is full) another takes
back and sends, each record once, however many take at the same time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from optibase_edge import Batch, MemoryStore, Outcome
from optibase_edge._delivery.sender import Delivery
from optibase_edge._delivery.spool import REDIS_KEY, RedisSpool, record
from optibase_edge._events import Event
from optibase_edge._segment import message_id
from optibase_edge._settings import RedisUrl, Settings
from tests.support.accounting import balanced
from tests.support.events import identify
from tests.support.net import LOOPBACK, free_port
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spool_url(redis_url: str) -> Iterator[str]:
    """The session's redis-server, database 3 (the URL's database is the spool's), emptied."""
    url = redis_url.rsplit("/", 1)[0] + "/3"
    client = redis.Redis.from_url(url)
    client.delete(REDIS_KEY)
    yield url
    client.delete(REDIS_KEY)
    client.close()


@pytest.fixture
def raw(spool_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(spool_url)
    yield client
    client.close()


class Gate:
    """A transport that holds every send until opened, and keeps what it delivered."""

    def __init__(self, is_open: bool = False) -> None:
        self.open = asyncio.Event()
        if is_open:
            self.open.set()
        self.delivered: list[str] = []

    async def send(self, batch: Batch) -> Outcome:
        await self.open.wait()
        self.delivered.extend(m["messageId"] for m in batch.decoded())
        return Outcome(200)

    async def aclose(self) -> None:
        return None


def delivery(transport: Gate, spool_path: str, **tunables: Any) -> Delivery:
    settings = Settings(
        spool_path=RedisUrl(spool_path),
        flush_interval=0.01,
        request_timeout=1.0,
        shutdown_timeout=1.0,
        **tunables,
    )
    return Delivery(settings, transport, MemoryStore())


def ids(events: list[Event]) -> list[str]:
    return sorted(message_id(e) for e in events)


def message(mid: str) -> bytes:
    return json.dumps(
        {"type": "track", "event": "X", "anonymousId": "a", "messageId": mid}
    ).encode()


async def left_behind(spool_url: str, tag: str, count: int) -> tuple[Delivery, list[Event]]:
    """A delivery that could send nothing, shut down with *count* events: all spooled."""
    first = delivery(Gate(), spool_url)
    await first.start()
    events: list[Event] = [identify(f"{tag}{i}") for i in range(count)]
    for event in events:
        first.submit(event)
    await first.aclose(timeout=0)
    return first, events


async def test_what_is_left_at_shutdown_is_sent_by_the_next_instance_once(
    spool_url: str, raw: redis.Redis
) -> None:
    first, events = await left_behind(spool_url, "left", 5)
    stats = first.stats()
    assert (stats["spooled"], stats["failed"], stats["pending"]) == (5, 0, 5)
    assert raw.llen(REDIS_KEY) == 5
    received = Gate(is_open=True)
    second = delivery(received, spool_url)  # another host, as far as Redis can tell
    await second.start()
    assert await second.flush(5)
    assert sorted(received.delivered) == ids(events)
    assert second.stats()["restored"] == 5 and raw.llen(REDIS_KEY) == 0
    await second.aclose()
    third = delivery(Gate(is_open=True), spool_url)
    await third.start()
    assert third.stats()["restored"] == 0
    await third.aclose()


async def test_takers_racing_get_disjoint_records(spool_url: str, raw: redis.Redis) -> None:
    everything = [message(f"r{i}") for i in range(300)]
    raw.rpush(REDIS_KEY, *everything)
    takers = [RedisSpool(RedisUrl(spool_url), timeout=2.0) for _ in range(4)]

    async def take_all(spool: RedisSpool) -> list[bytes]:
        got: list[bytes] = []
        for _ in range(len(everything)):  # bounded: a taker that takes nothing stops sooner
            if (taken := await spool.take(7)) is None:
                break
            got += [r.message for r in taken.records]
        return got

    results = await asyncio.gather(*(take_all(t) for t in takers))
    for taker in takers:
        await taker.aclose()
    assert sum(map(len, results)) == len(everything)
    assert sorted(m for got in results for m in got) == sorted(everything)
    assert raw.llen(REDIS_KEY) == 0


async def test_a_garbage_record_is_skipped_and_counted(spool_url: str, raw: redis.Redis) -> None:
    good = identify("good")
    raw.rpush(
        REDIS_KEY,
        b'{"type":"track","messageId":"torn',
        b"\xff\x00 not ours",
        record(message("plain")),
        record(message("keyed"), good.once_key),
        b'{"onceKey": 7, "message": {"type": "track", "messageId": "bad-key"}}',
    )
    received = Gate(is_open=True)
    taker = delivery(received, spool_url)
    await taker.start()
    assert await taker.flush(5)
    stats = taker.stats()
    assert (stats["restored"], stats["spool_skipped"], stats["sent"]) == (2, 3, 2)
    assert sorted(received.delivered) == ["keyed", "plain"] and balanced(stats)
    await taker.aclose()


async def test_overflow_goes_to_the_redis_list_and_comes_back(
    spool_url: str, raw: redis.Redis
) -> None:
    gate = Gate()
    busy = delivery(gate, spool_url, max_buffer_events=3)
    await busy.start()
    events: list[Event] = [identify(f"o{i}") for i in range(12)]
    for event in events:
        assert busy.submit(event)
        await wait_until_async(lambda: not busy._queue.overflow, "the overflow in Redis")
    stats = busy.stats()
    assert (stats["overflowed"], stats["dropped"], raw.llen(REDIS_KEY)) == (9, 0, 9)
    assert balanced(stats)
    gate.open.set()
    assert await busy.flush(5)
    assert sorted(gate.delivered) == ids(events) and raw.llen(REDIS_KEY) == 0
    await busy.aclose()


async def test_redis_down_at_shutdown_counts_the_events_failed_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"redis://{LOOPBACK}:{free_port()}/0"  # nothing listens there
    stranded = delivery(Gate(), nowhere)
    await stranded.start()  # cannot take over either: logged, not raised
    for event in [identify(f"d{i}") for i in range(4)]:
        stranded.submit(event)
    with caplog.at_level(logging.ERROR, logger="optibase_edge"):
        await stranded.aclose(timeout=0)  # never raises into the app
    stats = stranded.stats()
    assert (stats["failed"], stats["spooled"], stats["pending"]) == (4, 0, 0) and balanced(stats)
    assert any("could not write 4 undelivered events" in r.getMessage() for r in caplog.records)


SECOND_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    from optibase_edge import JsonLinesTransport, MemoryStore
    from optibase_edge._delivery.sender import Delivery
    from optibase_edge._settings import Settings

    async def main():
        settings = Settings(spool_path=sys.argv[1], flush_interval=0.01)
        delivery = Delivery(settings, JsonLinesTransport(sys.argv[2]), MemoryStore())
        await delivery.start()
        flushed = await delivery.flush(10)
        await delivery.aclose()
        print(json.dumps({"flushed": flushed, **delivery.stats()}))

    asyncio.run(main())
    """
)


async def test_a_second_process_takes_the_list_over(
    spool_url: str, raw: redis.Redis, tmp_path: Path
) -> None:
    _, events = await left_behind(spool_url, "p", 6)
    assert raw.llen(REDIS_KEY) == 6
    out = tmp_path / "events.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, spool_url, str(out)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # this checkout, not an installed copy
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    stats = json.loads(done.stdout)
    assert stats["flushed"] and (stats["restored"], stats["sent"]) == (6, 6)
    sent = [json.loads(line)["messageId"] for line in out.read_text().splitlines()]
    assert sorted(sent) == ids(events) and raw.llen(REDIS_KEY) == 0

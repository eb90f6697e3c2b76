"""Unit tests of the delivery policy, with an in-memory fake transport.

Timings are scaled down (backoff base and cap patched, short flush intervals);
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optibase_edge import Batch, MemoryStore, Outcome, Transport
from optibase_edge._delivery import retry
from optibase_edge._delivery.log import RateLimitedLog
from optibase_edge._delivery.retry import backoff, is_retryable, parse_retry_after
from optibase_edge._delivery.sender import Delivery
from optibase_edge._events import Event
from optibase_edge._segment import MAX_BATCH_BYTES, batch_body, message_id
from optibase_edge._settings import Settings
from tests.support.accounting import balanced
from tests.support.events import conversion, identify
from tests.support.events import conversions as events
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.anyio

Reply = Outcome | BaseException | float  # a float: hang that many seconds, then 200
Responder = Callable[[list[bytes]], Reply]


class FakeTransport:
    """Implements the ``Transport`` protocol; answers from a script, then a responder."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.script: deque[Reply] = deque()
        self.responder = responder or (lambda items: Outcome(200))
        self.calls: list[tuple[list[bytes], float, float]] = []  # items, sentAt, monotonic
        self.delivered: list[bytes] = []
        self.in_flight = 0
        self.cancelled = 0
        self.closed = False

    async def send(self, batch: Batch) -> Outcome:
        items = list(batch.messages)
        self.calls.append((items, batch.sent_at, time.monotonic()))
        reply = self.script.popleft() if self.script else self.responder(items)
        self.in_flight += 1
        try:
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(reply, float):
                await asyncio.sleep(reply)
                reply = Outcome(200)
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        if 200 <= reply.status < 300:
            self.delivered.extend(items)
        return reply

    async def aclose(self) -> None:
        self.closed = True


def settings_for(tmp_path: Path | None = None, **tunables: Any) -> Settings:
    """Optibase's settings, with delivery's timings scaled down for tests."""
    if tmp_path is not None:
        tunables.setdefault("spool_path", tmp_path / "spool.jsonl")
    defaults: dict[str, Any] = {
        "flush_interval": 0.01,
        "request_timeout": 1.0,
        "retry_max_time": 2.0,
        "shutdown_timeout": 1.0,
    }
    return Settings(**{**defaults, **tunables})


def ids_of(items: list[bytes]) -> list[str]:
    return [json.loads(item)["messageId"] for item in items]


def new(
    transport: Transport, tmp_path: Path | None = None, store: Any = None, **tunables: Any
) -> Delivery:
    store = MemoryStore() if store is None else store  # (an empty MemoryStore is falsy)
    return Delivery(settings_for(tmp_path, **tunables), transport, store)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(retry, "BACKOFF_CAP", 0.05)


# -- the retry policy -----------------------------------------------------------------

RETRYABLE = {0: True, 408: True, 429: True, 500: True, 502: True, 503: True, 504: True, 599: True}
NOT_RETRYABLE = {400: False, 401: False, 403: False, 404: False, 413: False, 422: False}
NOT_RETRYABLE |= {501: False, 505: False, 301: False}


@pytest.mark.parametrize(("status", "expected"), sorted({**RETRYABLE, **NOT_RETRYABLE}.items()))
def test_retryable_statuses(status: int, expected: bool) -> None:
    assert is_retryable(status) is expected


@pytest.mark.parametrize("status", [0, 408, 429, 500, 503])
async def test_retryable_status_is_retried_then_sent(status: int) -> None:
    fake = FakeTransport()
    fake.script.extend([Outcome(status), Outcome(status)])
    delivery = new(fake)
    batch = events(3)
    for event in batch:
        delivery.submit(event)
    assert await delivery.flush(3)
    stats = delivery.stats()
    assert (stats["sent"], stats["retried"], stats["failed"]) == (3, 2, 0)
    assert len(fake.calls) == 3
    await delivery.aclose()


@pytest.mark.parametrize("status", [401, 403, 404, 422, 501, 505])
async def test_other_4xx_and_501_505_fail_at_once_without_split(status: int) -> None:
    fake = FakeTransport()
    fake.script.append(Outcome(status))
    delivery = new(fake)
    for event in events(4):
        delivery.submit(event)
    assert await delivery.flush(3)
    stats = delivery.stats()
    assert (stats["failed"], stats["sent"], stats["retried"]) == (4, 0, 0)
    assert len(fake.calls) == 1
    await delivery.aclose()


@pytest.mark.parametrize("status", [400, 413])
@pytest.mark.parametrize(("size", "bad_at"), [(16, 5), (7, 0), (7, 6), (1, 0), (2500, 1234)])
async def test_split_isolates_the_single_bad_event(status: int, size: int, bad_at: int) -> None:
    def refuse_marked(items: list[bytes]) -> Outcome:
        return Outcome(status if any(b"BAD" in item for item in items) else 200)

    fake = FakeTransport(refuse_marked)
    delivery = new(fake, max_batch_events=2500)
    batch = [conversion(f"s{i}", marker="BAD" if i == bad_at else "") for i in range(size)]
    for event in batch:
        delivery.submit(event)
    assert await delivery.flush(5)
    stats = delivery.stats()
    assert (stats["sent"], stats["failed"], stats["pending"]) == (size - 1, 1, 0)
    good = {message_id(e) for i, e in enumerate(batch) if i != bad_at}
    assert set(ids_of(fake.delivered)) == good
    # Halving: about 2 requests per level of a binary search, not one per event.
    assert len(fake.calls) <= 2 * max(1, size.bit_length()) + 1
    await delivery.aclose()


async def test_same_message_ids_on_every_attempt_with_fresh_sent_at() -> None:
    fake = FakeTransport()
    fake.script.extend([Outcome(503, retry_after=0.15), Outcome(0, error="reset"), Outcome(200)])
    delivery = new(fake)
    for event in events(5):
        delivery.submit(event)
    assert await delivery.flush(3)
    assert len(fake.calls) == 3
    first_items = fake.calls[0][0]
    assert all(items == first_items for items, _, _ in fake.calls)
    sent_ats = [sent_at for _, sent_at, _ in fake.calls]
    assert sent_ats[1] - sent_ats[0] >= 0.14  # fresh: taken per attempt, not per batch
    assert sent_ats == sorted(sent_ats)
    await delivery.aclose()


async def test_retry_after_seconds_is_honoured() -> None:
    fake = FakeTransport()
    fake.script.append(Outcome(429, retry_after=0.3))
    delivery = new(fake)
    delivery.submit(conversion())
    assert await delivery.flush(3)
    gap = fake.calls[1][2] - fake.calls[0][2]
    assert gap >= 0.29
    await delivery.aclose()


async def test_retry_after_longer_than_the_time_left_gives_up_at_once() -> None:
    fake = FakeTransport()
    fake.script.append(Outcome(429, retry_after=30.0))
    delivery = new(fake, retry_max_time=1.0)
    delivery.submit(conversion())
    started = time.monotonic()
    assert await delivery.flush(3)
    assert time.monotonic() - started < 0.5
    assert (delivery.stats()["failed"], len(fake.calls)) == (1, 1)
    await delivery.aclose()


async def test_gives_up_after_retry_max_time() -> None:
    fake = FakeTransport(lambda items: Outcome(500))
    delivery = new(fake, retry_max_time=0.4)
    for event in events(3):
        delivery.submit(event)
    started = time.monotonic()
    assert await delivery.flush(3)
    elapsed = time.monotonic() - started
    stats = delivery.stats()
    assert (stats["failed"], stats["sent"], stats["pending"]) == (3, 0, 0)
    assert 0.35 <= elapsed < 1.5
    assert stats["retried"] == len(fake.calls) - 1 >= 3
    await delivery.aclose()


def test_backoff_is_bounded_by_its_cap() -> None:
    for attempt in range(0, 2000, 7):
        assert 0 <= backoff(attempt) <= retry.BACKOFF_CAP
    assert all(backoff(0) <= retry.BACKOFF_BASE for _ in range(100))


@given(
    attempt=st.integers(0, 10_000),
    retry_after=st.none() | st.floats(0, 1e6, allow_nan=False),
)
def test_backoff_full_jitter_and_retry_after_cap(attempt: int, retry_after: float | None) -> None:
    delay = backoff(attempt, retry_after)
    cap = retry.BACKOFF_CAP
    if retry_after is None:
        assert 0 <= delay <= cap
    else:
        ra = min(retry_after, retry.RETRY_AFTER_CAP)
        assert ra <= delay <= max(ra, cap)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0", 0.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after(future) or 0) <= 31
    # "-0000" parses to a naive datetime: it is UTC, not the local time.
    naive = email.utils.formatdate(time.time() + 30).replace("+0000", "-0000")
    assert 28 <= (parse_retry_after(naive) or 0) <= 31


async def test_an_unexpected_exception_from_the_transport_is_retried() -> None:
    fake = FakeTransport()
    fake.script.extend([ValueError("boom"), RuntimeError("bang")])
    delivery = new(fake)
    for event in events(4):
        delivery.submit(event)
    assert await delivery.flush(3)
    stats = delivery.stats()
    assert (stats["sent"], stats["retried"], stats["pending"]) == (4, 2, 0)
    await delivery.aclose()


# -- batching and head-of-line --------------------------------------------------------


async def test_events_within_flush_interval_make_one_batch() -> None:
    fake = FakeTransport()
    delivery = new(fake, flush_interval=0.3)
    await delivery.start()
    for event in events(5):
        delivery.submit(event)
        await asyncio.sleep(0.01)  # each submit must not cut the batch's wait short
    await wait_until_async(lambda: delivery.stats()["sent"] == 5, "5 sent", timeout=3)
    assert [len(items) for items, _, _ in fake.calls] == [5]
    await delivery.aclose()


async def test_a_full_batch_goes_without_waiting_for_the_interval() -> None:
    fake = FakeTransport()
    delivery = new(fake, flush_interval=30.0, max_batch_events=10)
    await delivery.start()
    for event in events(25):
        delivery.submit(event)
    await wait_until_async(lambda: delivery.stats()["sent"] >= 20, "20 sent", timeout=2)
    assert [len(items) for items, _, _ in fake.calls][:2] == [10, 10]
    await delivery.aclose(timeout=1)


async def test_a_batch_in_backoff_or_hanging_does_not_block_the_next() -> None:
    fake = FakeTransport()
    fake.script.extend([5.0, Outcome(500, retry_after=5.0)])  # hangs, then long backoff
    delivery = new(fake, max_in_flight=2, retry_max_time=30.0)
    first, second, third = events(2, "a"), events(2, "b"), events(2, "c")
    for calls, group in enumerate((first, second, third), start=1):
        for event in group:
            delivery.submit(event)
        await wait_until_async(lambda n=calls: len(fake.calls) >= n, "a request", timeout=3)  # type: ignore[misc]
    await wait_until_async(
        lambda: {message_id(e) for e in third} <= set(ids_of(fake.delivered)),
        "the third batch",
        timeout=3,
    )
    stats = delivery.stats()
    assert stats["pending"] == 4 and balanced(stats)
    await delivery.aclose(timeout=0)


async def test_at_most_max_in_flight_requests() -> None:
    peak = 0
    fake = FakeTransport(lambda items: 0.05)
    delivery = new(fake, max_in_flight=3, max_batch_events=2)
    await delivery.start()
    for event in events(20):
        delivery.submit(event)

    async def watch() -> None:
        nonlocal peak
        for _ in range(400):
            peak = max(peak, fake.in_flight)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    assert await delivery.flush(5)
    watcher.cancel()
    assert 2 <= peak <= 3
    await delivery.aclose()


async def test_batches_respect_request_limits(tmp_path: Path) -> None:
    # Tiny messages (through the spool, as they come) hit the 2,500-event cap first...
    (tmp_path / "spool.jsonl").write_bytes(spool_lines(*(message(f"m{i}") for i in range(3000))))
    fake = FakeTransport()
    delivery = new(fake, tmp_path, max_batch_events=5000, max_buffer_bytes=64 * 1024 * 1024)
    await delivery.start()
    # ...Identify events of ~20 KB the 500,000-byte cap, envelope included.
    for i in range(60):
        delivery.submit(identify(f"w{i}", traits={"pad": "x" * 20_000}))
    assert await delivery.flush(5)
    sizes = [len(batch_body(items, time.time())) for items, _, _ in fake.calls]
    counts = [len(items) for items, _, _ in fake.calls]
    assert counts[0] == 2500 and max(counts) == 2500 and sum(counts) == 3060
    assert max(sizes) <= MAX_BATCH_BYTES
    assert max(sizes[1:]) > MAX_BATCH_BYTES - 25_000  # packed, not split early
    assert delivery.stats()["sent"] == 3060
    await delivery.aclose()


# -- backpressure ---------------------------------------------------------------------


async def test_buffer_full_drops_without_blocking() -> None:
    fake = FakeTransport(lambda items: 5.0)
    delivery = new(fake, max_buffer_events=50, max_in_flight=1)
    batch = events(2000)
    started = time.perf_counter()
    for event in batch:
        delivery.submit(event)
    assert time.perf_counter() - started < 0.5  # 2000 submits; ~1 µs each in practice
    stats = delivery.stats()
    assert (stats["accepted"], stats["dropped"], stats["pending"]) == (2000, 1950, 50)
    # Outstanding batches count against the bound too.
    await wait_until_async(lambda: fake.in_flight == 1, "a request in flight", timeout=3)
    delivery.submit(conversion())
    assert delivery.stats()["dropped"] == 1951 and balanced(delivery.stats())
    await delivery.aclose(timeout=0)


async def test_submit_says_whether_the_event_was_queued() -> None:
    fake = FakeTransport(lambda items: 5.0)
    delivery = new(fake, max_buffer_events=4)
    assert [delivery.submit(conversion(), beacon=True) for _ in range(3)] == [True, True, False]
    assert [delivery.submit(identify(f"v{i}")) for i in range(3)] == [True, True, False]
    stats = delivery.stats()
    assert (stats["dropped"], stats["deferred"], stats["beacons_dropped"]) == (2, 1, 1)
    await delivery.aclose(timeout=0)
    assert delivery.submit(identify("late")) is False  # closed
    assert delivery.stats()["deferred"] == 2 and balanced(delivery.stats())


async def test_submit_from_a_worker_thread_answers_from_the_room_it_sees() -> None:
    fake = FakeTransport(lambda items: 5.0)
    delivery = new(fake, max_buffer_events=4)
    await delivery.start()
    answers = [await asyncio.to_thread(delivery.submit, identify(f"v{i}")) for i in range(6)]
    await asyncio.sleep(0)  # the last hand-over runs
    assert answers == [True] * 4 + [False] * 2
    stats = delivery.stats()
    assert (stats["accepted"], stats["dropped"], stats["deferred"]) == (6, 2, 2)
    assert balanced(stats)
    await delivery.aclose(timeout=0)


async def test_byte_bound_drops_and_counts() -> None:
    fake = FakeTransport(lambda items: 5.0)
    delivery = new(fake, max_buffer_bytes=4000)
    for i in range(10):
        delivery.submit(identify(f"v{i}", traits={"pad": "y" * 900}))
    await wait_until_async(lambda: delivery.stats()["dropped"] > 0, "a drop", timeout=3)
    stats = delivery.stats()
    assert stats["dropped"] >= 6 and stats["pending"] <= 4 and balanced(stats)
    await delivery.aclose(timeout=0)


async def test_oversized_event_is_never_sent() -> None:
    fake = FakeTransport()
    delivery = new(fake)
    delivery.submit(identify("big", traits={"pad": "z" * 40_000}))
    delivery.submit(conversion())
    assert await delivery.flush(2)
    stats = delivery.stats()
    assert (stats["oversized"], stats["dropped"], stats["sent"]) == (1, 1, 1)
    assert all(b"zzzz" not in item for item in fake.delivered)
    await delivery.aclose()


async def test_once_only_events_are_claimed_once() -> None:
    fake = FakeTransport()
    delivery = new(fake)
    same = identify("v1")
    for _ in range(3):
        delivery.submit(same)
    delivery.submit(identify("v2"))
    assert await delivery.flush(2)
    stats = delivery.stats()
    assert (stats["sent"], stats["deduped"]) == (2, 2)
    await delivery.aclose()


async def test_a_hanging_store_does_not_stall_delivery() -> None:
    class HangingStore(MemoryStore):
        async def claim(self, key: str, ttl: float) -> bool:
            await asyncio.sleep(10)
            return True

    fake = FakeTransport()
    delivery = new(fake, store=HangingStore(), request_timeout=0.2)
    delivery.submit(identify("v1"))
    assert await delivery.flush(2)
    assert (delivery.stats()["sent"], delivery.stats()["store_errors"]) == (1, 1)
    await delivery.aclose()


async def test_submit_from_a_worker_thread_wakes_the_sender() -> None:
    fake = FakeTransport()
    delivery = new(fake, flush_interval=0.02)
    await delivery.start()
    await asyncio.sleep(0.05)  # the sender is idle, waiting for a first event
    event = conversion()
    await asyncio.to_thread(delivery.submit, event)
    await wait_until_async(lambda: delivery.stats()["sent"] == 1, "1 sent", timeout=2)
    assert ids_of(fake.delivered) == [message_id(event)]
    await delivery.aclose()


# -- flush, close, spool --------------------------------------------------------------


async def test_flush_deadline_returns_false_and_leaves_pending(tmp_path: Path) -> None:
    fake = FakeTransport(lambda items: 10.0)
    delivery = new(fake, tmp_path)
    for event in events(6):
        delivery.submit(event)
    started = time.monotonic()
    assert await delivery.flush(0.2) is False
    assert time.monotonic() - started < 1.0
    stats = delivery.stats()
    assert stats["pending"] == 6 and balanced(stats)
    await delivery.aclose(timeout=0)
    assert delivery.stats()["spooled"] == 6


async def test_a_cancelled_flush_loses_nothing() -> None:
    fake = FakeTransport()
    fake.script.append(0.3)
    delivery = new(fake)
    for event in events(5):
        delivery.submit(event)
    flushing = asyncio.create_task(delivery.flush(5))
    await wait_until_async(lambda: fake.in_flight == 1, "a request in flight", timeout=3)
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    assert delivery.stats()["pending"] == 5
    assert await delivery.flush(3)
    assert delivery.stats()["sent"] == 5
    await delivery.aclose()


async def test_aclose_cancels_in_flight_and_spools(tmp_path: Path) -> None:
    fake = FakeTransport(lambda items: 10.0)
    delivery = new(fake, tmp_path)
    batch = events(7)
    for event in batch:
        delivery.submit(event)
    await wait_until_async(lambda: fake.in_flight == 1, "a request in flight", timeout=3)
    delivery.submit(conversion("late"))  # still in the buffer
    started = time.monotonic()
    await delivery.aclose(timeout=0.1)
    assert time.monotonic() - started < 2.0
    assert fake.cancelled >= 1 and fake.closed  # the late event went out in a flush, too
    stats = delivery.stats()
    assert (stats["spooled"], stats["pending"]) == (8, 8) and balanced(stats)
    lines = [line for line in (tmp_path / "spool.jsonl").read_bytes().splitlines() if line]
    assert {message_id(e) for e in batch} <= set(ids_of(lines)) and len(lines) == 8
    # Closed: flush answers at once, submit drops (counted).
    assert await asyncio.wait_for(delivery.flush(None), 1) is False
    delivery.submit(conversion())
    assert delivery.stats()["dropped"] == 1 and balanced(delivery.stats())


async def test_aclose_cancelled_mid_flush_still_spools(tmp_path: Path) -> None:
    fake = FakeTransport(lambda items: 10.0)
    delivery = new(fake, tmp_path)
    for event in events(4):
        delivery.submit(event)
    closing = asyncio.create_task(delivery.aclose(timeout=30))
    await wait_until_async(lambda: fake.in_flight == 1, "a request in flight", timeout=3)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    assert delivery.stats()["spooled"] == 4 and balanced(delivery.stats())


async def test_no_spool_path_counts_leftovers_as_failed() -> None:
    fake = FakeTransport(lambda items: 10.0)
    delivery = new(fake)
    for event in events(3):
        delivery.submit(event)
    await delivery.aclose(timeout=0.05)
    stats = delivery.stats()
    assert (stats["failed"], stats["pending"], stats["spooled"]) == (3, 0, 0)


async def test_unwritable_spool_counts_leftovers_as_failed(tmp_path: Path) -> None:
    fake = FakeTransport(lambda items: 10.0)
    delivery = new(fake, spool_path=tmp_path / "missing-dir" / "spool.jsonl")
    for event in events(3):
        delivery.submit(event)
    await delivery.aclose(timeout=0.05)
    stats = delivery.stats()
    assert (stats["failed"], stats["pending"]) == (3, 0) and balanced(stats)


def spool_lines(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def message(mid: str) -> dict[str, Any]:
    return {"type": "track", "event": "X", "anonymousId": "a", "messageId": mid}


async def test_spool_is_taken_over_and_a_corrupt_tail_skipped(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(
        spool_lines(message("m1"), message("m2"))
        + b"\x00\xff garbage\n"
        + b'["not", "a", "message"]\n'
        + b'{"type": "track"}\n'  # no messageId
        + b"{"
        + b"x" * 100_000
        + b"\n"  # over-long line
        + spool_lines(message("m3"))
        + b'{"type":"track","messageId":"torn'  # a crash mid-write
    )
    fake = FakeTransport()
    delivery = new(fake, tmp_path)
    await delivery.start()
    assert delivery.stats()["restored"] == 3
    assert await delivery.flush(2)
    assert sorted(ids_of(fake.delivered)) == ["m1", "m2", "m3"]
    assert not spool.exists() and not list(tmp_path.glob("*.taking"))
    stats = delivery.stats()
    assert (stats["accepted"], stats["sent"]) == (3, 3)
    await delivery.aclose()
    # Only one process takes a spool.
    other = new(FakeTransport(), tmp_path)
    await other.start()
    assert other.stats()["restored"] == 0
    await other.aclose()


async def test_a_torn_line_does_not_swallow_the_next_writer(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    writer = new(FakeTransport(lambda items: 10.0), tmp_path)
    await writer.start()  # no spool yet: nothing to take over
    spool.write_bytes(b'{"type":"track","messageId":"torn')  # another writer crashed mid-line
    batch = events(3)
    for event in batch:
        writer.submit(event)
    await writer.aclose(timeout=0)
    received = FakeTransport()
    reader = new(received, tmp_path)
    await reader.start()
    assert await reader.flush(2)
    assert set(ids_of(received.delivered)) == {message_id(e) for e in batch}
    await reader.aclose()


async def test_a_spool_bigger_than_the_buffer_is_taken_back_as_room_allows(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(spool_lines(*(message(f"m{i}") for i in range(30))))
    fake = FakeTransport()
    delivery = new(fake, tmp_path, max_buffer_events=20)
    await delivery.start()
    stats = delivery.stats()
    # Half the buffer at a time, the rest left in the spool: nothing dropped.
    assert (stats["restored"], stats["dropped"], stats["pending"]) == (10, 0, 10)
    assert await delivery.flush(2) and balanced(delivery.stats())
    stats = delivery.stats()
    assert (stats["restored"], stats["sent"], stats["dropped"]) == (30, 30, 0)
    assert sorted(ids_of(fake.delivered)) == sorted(f"m{i}" for i in range(30))
    await delivery.aclose()


def test_loop_change_takes_back_what_the_old_loop_held() -> None:
    class SlowStore(MemoryStore):
        claims = 0

        async def claim(self, key: str, ttl: float) -> bool:
            SlowStore.claims += 1
            await asyncio.sleep(hang)
            return await super().claim(key, ttl)

    hang = 10.0
    fake = FakeTransport(lambda items: 10.0)
    store = SlowStore()
    delivery = new(fake, store=store)
    plain = events(4)

    async def first_loop() -> None:
        for event in plain:
            delivery.submit(event)
        await wait_until_async(lambda: fake.in_flight == 1, "a request in flight", timeout=3)
        delivery.submit(identify("mid-claim"))
        await wait_until_async(lambda: SlowStore.claims == 1, "a claim", timeout=3)
        # asyncio.run() now cancels the sender (mid-claim) and the hanging batch.

    asyncio.run(first_loop())
    assert delivery.stats()["pending"] == 5
    hang = 0.0
    fake.responder = lambda items: Outcome(200)

    async def second_loop() -> None:
        assert await delivery.flush(3)
        await delivery.aclose()

    asyncio.run(second_loop())
    stats = delivery.stats()
    assert (stats["sent"], stats["pending"]) == (5, 0) and balanced(stats)
    sent = set(ids_of(fake.delivered))
    assert {message_id(e) for e in plain} <= sent and len(sent) == 5
    # The event interrupted mid-claim may hold its claim: it is not claimed again.
    assert SlowStore.claims == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_events_queued_before_a_fork_are_sent_by_the_child(tmp_path: Path) -> None:
    # A pre-forking server (gunicorn --preload) builds Optibase in the master, which
    # runs no loop: what it queued is sent by the worker's own loop, not lost.
    fake = FakeTransport()
    delivery = new(fake)
    batch = events(3)
    for event in batch:
        delivery.submit(event)  # no running loop: only queued
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:

            async def worker() -> None:
                assert await delivery.flush(2)

            asyncio.run(worker())
            out.write_text(json.dumps(ids_of(fake.delivered)))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert set(json.loads(out.read_text())) == {message_id(e) for e in batch}


def test_write_key_is_scrubbed_from_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog("wk-123")
    with caplog.at_level("WARNING", logger="optibase_edge"):
        log.warning("a", "failed with wk-123 and d2stMTIzOg== in it")
        log.warning("a", "suppressed wk-123")
    assert "wk-123" not in caplog.text and "d2stMTIzOg==" not in caplog.text
    assert len(caplog.records) == 1  # rate-limited


# -- the accounting identity under arbitrary interleavings ------------------------------


def make_event(kind: str, once: Event) -> Event:
    if kind == "once":
        return identify(uuid.uuid4().hex)
    if kind == "dup":
        return once
    if kind == "big":  # ~9 KB: a few of them hit the byte bound
        return identify("big", traits={"p": "q" * 9000})
    return conversion(marker="BAD" if kind == "bad" else "")


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(["plain", "once", "dup", "big", "bad"])),
        st.tuples(
            st.just("reply"),
            st.sampled_from([200, 400, 408, 429, 500, 501, 0, "raise", "hang"]),
        ),
        st.tuples(st.just("flush"), st.sampled_from([0.0, 0.01, 0.05])),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.005, 0.02])),
        st.tuples(st.just("cancel-flush"), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS, close_timeout=st.sampled_from([0.0, 0.02, 0.2]))
def test_stats_identity_holds_at_every_step(
    ops: list[tuple[str, Any]], close_timeout: float, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spool = tmp_path_factory.mktemp("spool") / "spool.jsonl"

    def reply_for(kind: Any) -> Reply:
        if kind == "raise":
            return OSError("boom")
        if kind == "hang":
            return 0.05
        if kind == 400:
            return Outcome(400)
        return Outcome(kind, retry_after=0.01 if kind == 429 else None)

    def responder(items: list[bytes]) -> Outcome:
        return Outcome(400 if any(b"BAD" in item for item in items) else 200)

    async def scenario() -> None:
        fake = FakeTransport(responder)
        delivery = new(
            fake,
            spool_path=spool,
            retry_max_time=0.05,
            max_buffer_events=15,
            max_buffer_bytes=30_000,
            max_batch_events=4,
            max_in_flight=2,
        )
        violations: list[dict[str, int]] = []

        def check() -> None:
            stats = delivery.stats()
            if not balanced(stats) or min(stats.values()) < 0:
                violations.append(stats)

        async def sample() -> None:
            for _ in range(10_000):
                check()
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        once = identify("same")
        for op, arg in ops:
            if op == "submit":
                delivery.submit(make_event(arg, once))
            elif op == "reply":
                fake.script.append(reply_for(arg))
            elif op == "flush":
                await delivery.flush(arg)
            elif op == "sleep":
                await asyncio.sleep(arg)
            else:
                task = asyncio.create_task(delivery.flush(1))
                await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            check()
        await delivery.aclose(timeout=close_timeout)
        check()
        sampler.cancel()
        stats = delivery.stats()
        assert not violations, violations[:3]
        assert stats["pending"] == stats["spooled"]  # nothing left in memory
        if spool.exists():
            spool.unlink()

    asyncio.run(asyncio.wait_for(scenario(), 10))


# -- overflow to the spool ----------------------------------------------------------------


class Gate:
    """A transport that holds every send until opened: the buffer fills meanwhile."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.delivered: list[bytes] = []

    async def send(self, batch: Batch) -> Outcome:
        await self.open.wait()
        self.delivered.extend(batch.messages)
        return Outcome(200)

    async def aclose(self) -> None:
        return None


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(1, 12), count=st.integers(0, 60), in_flight=st.integers(1, 3))
async def test_with_a_spool_a_full_buffer_loses_nothing_and_sends_each_event_once(
    tmp_path_factory: pytest.TempPathFactory, size: int, count: int, in_flight: int
) -> None:
    gate = Gate()
    delivery = new(
        gate,
        tmp_path_factory.mktemp("spool"),
        max_buffer_events=size,
        max_batch_events=3,
        max_in_flight=in_flight,
    )
    await delivery.start()
    batch = [identify(f"o{i}") for i in range(count)]  # once-only, every one
    for event in batch:
        assert delivery.submit(event)  # queued, or as good as queued: never refused
        assert balanced(delivery.stats())
        # The overflow (as big as the buffer) is on its way to the spool.
        await wait_until_async(lambda: not delivery._queue.overflow, "the overflow spooled")
        assert balanced(delivery.stats())
    stats = delivery.stats()
    assert (stats["dropped"], stats["deferred"]) == (0, 0)
    assert stats["overflowed"] == max(0, count - size)
    gate.open.set()
    assert await delivery.flush(5)
    stats = delivery.stats()
    assert balanced(stats) and (stats["sent"], stats["pending"]) == (count, 0)
    assert sorted(ids_of(gate.delivered)) == sorted(message_id(e) for e in batch)
    await delivery.aclose()


async def test_an_overflowed_once_only_event_is_claimed_when_taken_back(tmp_path: Path) -> None:
    gate, store = Gate(), MemoryStore()
    delivery = new(gate, tmp_path, store=store, max_buffer_events=2)
    await delivery.start()
    first, second, third = identify("a"), identify("b"), identify("c")
    for event in (first, second, third):
        delivery.submit(event)
    assert delivery.stats()["overflowed"] == 1
    # Another process sent the overflowed one meanwhile: its claim is in the store.
    assert await store.claim(third.once_key, 60)
    gate.open.set()
    assert await delivery.flush(5)
    stats = delivery.stats()
    assert (stats["sent"], stats["deduped"], stats["dropped"]) == (2, 1, 0) and balanced(stats)
    assert sorted(ids_of(gate.delivered)) == sorted(message_id(e) for e in (first, second))
    await delivery.aclose()


async def test_overflow_the_spool_cannot_take_is_counted_failed(tmp_path: Path) -> None:
    gate = Gate()
    delivery = new(gate, spool_path=tmp_path / "missing-dir" / "spool.jsonl", max_buffer_events=2)
    await delivery.start()
    for event in events(4):  # two in the buffer, two (as many) on their way to the spool
        assert delivery.submit(event)
    await wait_until_async(lambda: delivery.stats()["failed"] == 2, "the overflow counted failed")
    stats = delivery.stats()
    assert (stats["overflowed"], stats["dropped"], stats["pending"]) == (2, 0, 2) and balanced(
        stats
    )
    gate.open.set()
    assert await delivery.flush(5) and delivery.stats()["sent"] == 2
    await delivery.aclose()


async def test_without_a_spool_a_full_buffer_still_drops() -> None:
    delivery = new(Gate(), max_buffer_events=2)
    results = [delivery.submit(event) for event in [identify(f"d{i}") for i in range(4)]]
    assert results == [True, True, False, False]
    stats = delivery.stats()
    assert (stats["overflowed"], stats["dropped"], stats["deferred"]) == (0, 2, 2)
    await delivery.aclose(timeout=0)

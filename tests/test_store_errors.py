"""A dedupe store that fails: ``on_store_error`` ("send" or "hold"), the breaker, the counters.

The store here is in memory and fails on command; the sender is the real one,
with a fake transport (from tests/test_delivery.py). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from optibase_edge import ConfigError, MemoryStore, Optibase
from optibase_edge._delivery import breaker, sender, spool
from optibase_edge._delivery.breaker import Breaker
from optibase_edge._events import Event
from optibase_edge._segment import encode, to_message
from tests.support.accounting import balanced
from tests.support.events import conversion, identify
from tests.support.polling import wait_until_async
from tests.test_delivery import FakeTransport, fast_backoff, new

pytestmark = pytest.mark.anyio
__all__ = ["fast_backoff"]  # the autouse fixture, brought in to apply here too


class BrokenStore:
    """A :class:`MemoryStore` behind a switch: while ``down``, every call raises.

    ``calls`` counts the calls that reached it, ``failures`` those that raised.
    ``fail_next`` makes that many of the next calls raise even when up.
    """

    def __init__(self, *, down: bool = True) -> None:
        self.down = down
        self.fail_next = 0
        self.calls = 0
        self.failures = 0
        self._claims = MemoryStore()

    async def claim(self, key: str, ttl: float) -> bool:
        return (await self.claim_many([key], ttl))[0]

    async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
        self.calls += 1
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            self.failures += 1
            raise ConnectionError("the store is down")
        return await self._claims.claim_many(keys, ttl)

    async def aclose(self) -> None:
        return None


def identifies(n: int, tag: str = "v") -> list[Event]:
    return [identify(f"{tag}{i}") for i in range(n)]


def anonymous_ids(fake: FakeTransport) -> list[str]:
    return [json.loads(item)["anonymousId"] for item in fake.delivered]


@pytest.fixture
def quick_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker, "FIRST_COOLDOWN", 0.02)
    monkeypatch.setattr(breaker, "LONGEST_COOLDOWN", 0.05)


# -- the setting ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["drop", "", None, True])
def test_a_bad_policy_is_refused_at_start_up_naming_the_field(bad: object) -> None:
    with pytest.raises(ConfigError, match="on_store_error"):
        Optibase(on_store_error=bad)  # type: ignore[arg-type]


def test_the_policy_is_read_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text('on_store_error = "hold"\n')
    assert Optibase.from_file(path).settings.on_store_error == "hold"
    assert Optibase().settings.on_store_error == "send"
    path.write_text('on_store_error = "later"\n')
    with pytest.raises(ConfigError, match="on_store_error"):
        Optibase.from_file(path)


# -- "send" ---------------------------------------------------------------------------


async def test_send_sends_unclaimed_once_only_events_and_counts_them() -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store)
    for event in [*identifies(3), conversion("v0")]:
        delivery.submit(event)
    assert await delivery.flush(2)
    stats = delivery.stats()
    assert (stats["sent"], stats["sent_unclaimed"], stats["held"]) == (4, 3, 0)
    assert stats["store_errors"] == 3 and balanced(stats)
    await delivery.aclose()


# -- "hold" ---------------------------------------------------------------------------


async def test_hold_keeps_once_only_events_until_the_store_answers(quick_breaker: None) -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store, on_store_error="hold")
    for event in [*identifies(3), identify("v0"), conversion("v0")]:
        delivery.submit(event)
    # The conversion needs no claim: it goes out; the Identifies wait.
    await wait_until_async(lambda: len(fake.delivered) == 1, "the conversion")
    assert not await delivery.flush(0.2)
    stats = delivery.stats()
    assert (stats["sent"], stats["held"], stats["pending"], stats["sent_unclaimed"]) == (1, 4, 4, 0)
    assert stats["store_errors"] >= 8 and balanced(stats)  # tried again, and again
    store.down = False
    assert await delivery.flush(2)
    stats = delivery.stats()
    assert (stats["sent"], stats["deduped"], stats["held"], stats["pending"]) == (4, 1, 0, 0)
    assert sorted(anonymous_ids(fake)) == ["v0", "v0", "v1", "v2"]  # conversion, Identify
    assert balanced(stats)
    await delivery.aclose()


async def test_held_events_keep_their_order_when_a_retry_fails(quick_breaker: None) -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store, on_store_error="hold")
    batch = identifies(250)  # three claim chunks
    for event in batch:
        delivery.submit(event)
    await wait_until_async(lambda: delivery.stats()["held"] == 250, "every Identify held")
    store.down, store.fail_next = False, 1  # up, but the first retry fails
    assert await delivery.flush(3)
    assert anonymous_ids(fake) == [f"v{i}" for i in range(250)]
    await delivery.aclose()


async def test_held_events_count_against_the_buffer(quick_breaker: None) -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store, on_store_error="hold", max_buffer_events=5)
    for event in identifies(5):
        assert delivery.submit(event)
    await wait_until_async(lambda: delivery.stats()["held"] == 5, "five held")
    assert not delivery.submit(identify("late"))
    assert not delivery.submit(conversion("late"))
    stats = delivery.stats()
    assert (stats["dropped"], stats["deferred"]) == (2, 1) and balanced(stats)
    await delivery.aclose(timeout=0)


async def test_held_events_are_spooled_at_shutdown(quick_breaker: None, tmp_path: Path) -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, tmp_path, store=store, on_store_error="hold")
    for event in identifies(3):
        delivery.submit(event)
    await wait_until_async(lambda: delivery.stats()["held"] == 3, "three held")
    await delivery.aclose(timeout=0.1)
    stats = delivery.stats()
    assert (stats["spooled"], stats["pending"], stats["held"], stats["failed"]) == (3, 3, 0, 0)
    assert balanced(stats)
    lines = (tmp_path / "spool.jsonl").read_bytes().split()
    records = [r for line in lines if (r := spool.parse(line)) is not None]
    assert sorted(json.loads(r.message)["anonymousId"] for r in records) == ["v0", "v1", "v2"]
    # Without their keys: a claim that failed may have landed, and then a taker that
    # claimed first would count them deduped and nobody would send them.
    assert all(r.once_key is None for r in records)


def keyed_records(n: int, tag: str = "s") -> list[bytes]:
    """Spool records of once-only events not claimed yet, as the overflow writes them."""
    return [spool.record(encode(to_message(e)), e.once_key) for e in identifies(n, tag)]


async def test_under_hold_the_spool_waits_for_the_store_without_spinning(
    quick_breaker: None, tmp_path: Path
) -> None:
    """While the breaker is open, nothing is taken back, and a flush does not spin."""
    spool.append_file(tmp_path / "spool.jsonl", keyed_records(3))
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, tmp_path, store=store, on_store_error="hold", flush_interval=0.5)
    takes = 0
    take_back = delivery._take_back

    async def counting(taken_from: spool.Spool) -> None:
        nonlocal takes
        takes += 1
        await take_back(taken_from)

    delivery._take_back = counting  # type: ignore[method-assign,assignment]
    delivery.submit(identify("held"))
    await wait_until_async(lambda: delivery.stats()["held"] == 1, "held: the breaker is open")
    takes = 0
    assert not await delivery.flush(0.3)  # the store is down: pending stays pending
    assert takes < 20 and fake.delivered == []
    store.down = False
    assert await delivery.flush(5)
    assert sorted(anonymous_ids(fake)) == ["held", "s0", "s1", "s2"]
    stats = delivery.stats()
    assert stats["sent_unclaimed"] == 0 and balanced(stats)
    await delivery.aclose()


async def test_under_hold_the_spool_is_taken_back_once_the_cooldown_ends(
    quick_breaker: None, tmp_path: Path
) -> None:
    """With nothing held and no flush, the sender still wakes when the store may be asked."""
    spool.append_file(tmp_path / "spool.jsonl", keyed_records(3))
    fake = FakeTransport()
    delivery = new(fake, tmp_path, store=BrokenStore(down=False), on_store_error="hold")
    delivery._breaker.failed()  # the store failed a moment ago
    await delivery.start()
    assert fake.delivered == []  # not while the breaker is open
    await wait_until_async(lambda: len(fake.delivered) == 3, "taken back after the cooldown")
    assert delivery.stats()["sent_unclaimed"] == 0
    await delivery.aclose()


async def test_records_taken_back_while_pages_fill_the_buffer_are_all_sent(
    tmp_path: Path,
) -> None:
    """Claimed on the way back, a record must be sent: none is dropped for want of room."""
    spool.append_file(tmp_path / "spool.jsonl", keyed_records(5))
    fake, store = FakeTransport(), MemoryStore()
    delivery = new(fake, tmp_path, store=store, max_buffer_events=10)
    assert delivery._spool is not None
    take = delivery._spool.take

    async def take_while_pages_come(limit: int) -> spool.Taken | None:
        taken = await take(limit)
        for i in range(10):  # pages served while the spool was read
            delivery.submit(conversion(f"page{i}"))
        return taken

    delivery._spool.take = take_while_pages_come  # type: ignore[method-assign]
    await delivery.start()
    assert await delivery.flush(5)
    stats = delivery.stats()
    assert stats["dropped"] == 0 and balanced(stats)
    assert {f"s{i}" for i in range(5)} <= set(anonymous_ids(fake))
    await delivery.aclose()


async def test_a_take_back_that_outlasts_shutdown_spools_what_it_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aclose() stops waiting for a hanging store; what the take-back held is spooled after."""
    monkeypatch.setattr(sender, "_CLOSE_WAIT", 0.05)
    spool.append_file(tmp_path / "spool.jsonl", keyed_records(3))

    class HangingStore(BrokenStore):
        async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
            await asyncio.sleep(3600)
            return []

    fake = FakeTransport()
    delivery = new(fake, tmp_path, store=HangingStore(), request_timeout=0.3)
    assert delivery._spool is not None
    take = delivery._spool.take

    async def slow_take(limit: int) -> spool.Taken | None:
        await asyncio.sleep(0.2)  # with the claim's 0.3 s, past what aclose() waits
        return await take(limit)

    delivery._spool.take = slow_take  # type: ignore[method-assign]
    starting = asyncio.create_task(delivery.start())
    await asyncio.sleep(0.05)  # the take-back is waiting for the store
    await delivery.aclose(timeout=0)
    await starting
    await wait_until_async(lambda: delivery.stats()["pending"] == 3, "back in the spool")
    await asyncio.sleep(0.5)  # and nothing more happens
    stats = delivery.stats()
    assert balanced(stats) and fake.delivered == [] and stats["pending"] == 3
    lines = (tmp_path / "spool.jsonl").read_bytes().split()
    assert len([line for line in lines if spool.parse(line)]) == 3


async def test_a_held_event_whose_claim_landed_is_still_sent_by_the_next_process(
    tmp_path: Path,
) -> None:
    """The reply was lost after Redis kept the claim: spooled with its key, nobody sends it."""
    shared = MemoryStore()

    class LostReply(BrokenStore):
        async def claim_many(self, keys: Sequence[str], ttl: float) -> list[bool]:
            await shared.claim_many(keys, ttl)
            raise TimeoutError("the reply was lost")

    first = new(FakeTransport(), tmp_path, store=LostReply(), on_store_error="hold")
    first.submit(identify("v0"))
    await wait_until_async(lambda: first.stats()["held"] == 1, "held")
    await first.aclose(timeout=0.05)
    fake = FakeTransport()
    second = new(fake, tmp_path, store=shared)
    await second.start()
    assert await second.flush(5)
    assert anonymous_ids(fake) == ["v0"]
    await second.aclose()


async def test_held_events_without_a_spool_fail_at_shutdown(quick_breaker: None) -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store, on_store_error="hold")
    for event in identifies(3):
        delivery.submit(event)
    await wait_until_async(lambda: delivery.stats()["held"] == 3, "three held")
    await delivery.aclose(timeout=0.1)
    stats = delivery.stats()
    assert (stats["failed"], stats["pending"], stats["held"]) == (3, 0, 0) and balanced(stats)


# -- the breaker ----------------------------------------------------------------------


def test_the_breaker_cools_down_longer_after_each_failure_then_closes() -> None:
    now = [0.0]
    b = Breaker(clock=lambda: now[0])
    assert b.allows() and b.wait() == 0
    waits = []
    for _ in range(7):
        b.failed()
        assert not b.allows()
        waits.append(b.wait())
        now[0] += b.wait()
        assert b.allows()
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    b.failed()
    b.succeeded()
    assert b.allows()
    b.failed()
    assert b.wait() == pytest.approx(0.1)  # from the start again


@pytest.mark.parametrize("policy", ["send", "hold"])
async def test_a_failed_store_is_left_alone_during_its_cooldown(
    monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setattr(breaker, "FIRST_COOLDOWN", 60.0)  # no probe within this test
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store, on_store_error=policy)
    for round_ in range(5):
        for event in identifies(3, tag=f"r{round_}-"):
            delivery.submit(event)
        await delivery.flush(0.05)
    if policy == "send":
        assert await delivery.flush(5)
    else:
        await wait_until_async(lambda: delivery.stats()["held"] == 15, "all held")
    stats = delivery.stats()
    assert store.calls == 1 and stats["store_errors"] == 3  # the first chunk's keys only
    if policy == "send":
        assert (stats["sent"], stats["sent_unclaimed"]) == (15, 15)
    else:
        assert (stats["sent"], stats["held"]) == (0, 15)
    assert balanced(stats)
    await delivery.aclose(timeout=0)


async def test_the_store_is_asked_again_after_the_cooldown(quick_breaker: None) -> None:
    fake, store = FakeTransport(), BrokenStore()
    delivery = new(fake, store=store)
    delivery.submit(identify("a"))
    assert await delivery.flush(1)
    store.down = False
    await wait_until_async(
        lambda: delivery.submit(identify("a")) and delivery.stats()["deduped"] > 0,
        "a claim that reached the store again",
        interval=0.02,
    )
    assert store.calls >= 2
    await delivery.aclose()


async def test_an_answer_closes_the_breaker_so_a_later_failure_cools_down_briefly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the reset each failure would double the wait, to 0.02 * 2**9 s by the last.
    monkeypatch.setattr(breaker, "FIRST_COOLDOWN", 0.02)
    monkeypatch.setattr(breaker, "LONGEST_COOLDOWN", 60.0)
    fake, store = FakeTransport(), BrokenStore(down=False)
    delivery = new(fake, store=store, on_store_error="hold")
    for cycle in range(10):
        store.fail_next = 1
        delivery.submit(identify(f"v{cycle}"))
        assert await delivery.flush(2), f"cycle {cycle}: still held"
    assert store.failures == 10 and delivery.stats()["sent"] == 10
    await delivery.aclose()

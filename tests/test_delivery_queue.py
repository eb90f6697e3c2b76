"""The delivery queue's accounting and the batcher, as plain data (no loop, no I/O)."""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from optibase_edge._delivery.batching import take_batch
from optibase_edge._delivery.queue import EventQueue
from optibase_edge._events import Event, Identify
from optibase_edge._segment import BATCH_ENVELOPE_BYTES, MAX_BATCH_BYTES, batch_body
from tests.support.accounting import balanced
from tests.support.events import conversion


def event(n: int) -> Identify:
    return Identify(f"v{n}", None, time.time())


def message(size: int) -> bytes:
    return json.dumps({"type": "track", "messageId": "m", "pad": "x" * size}).encode()


class QueueMachine(RuleBasedStateMachine):
    """Drives an EventQueue through every move, in any order the sender could make them."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = EventQueue(max_events=8, max_bytes=1_500)
        self.outstanding: list[tuple[int, list[bytes]]] = []
        self.spooled: list[bytes] = []
        self.from_spool: list[bytes] = []  # from the spool, not restored yet
        self.made = 0
        self.overflow = False

    @initialize(overflow=st.booleans(), max_events=st.integers(1, 8))
    def with_or_without_a_spool(self, overflow: bool, max_events: int) -> None:
        self.queue = EventQueue(max_events=max_events, max_bytes=1_500, overflow=overflow)
        self.overflow = overflow

    @rule(closed=st.booleans(), beacon=st.booleans(), deferrable=st.booleans())
    def accept(self, closed: bool, beacon: bool, deferrable: bool) -> None:
        self.made += 1
        queue = self.queue
        fits = queue.buffered() < queue.max_events if not beacon else queue.has_room(True)
        overflows = self.overflow and not beacon and len(queue.overflow) < queue.max_events
        assert queue.has_room(beacon) == (fits or overflows)
        verdict = queue.accept(event(self.made), closed, beacon=beacon, deferrable=deferrable)
        expected = "closed" if closed else "queued" if fits else "overflow" if overflows else "full"
        assert verdict == expected

    @precondition(lambda self: self.queue.overflow)
    @rule(count=st.integers(1, 5), unencodable=st.booleans(), written=st.booleans())
    def spool_overflow(self, count: int, unencodable: bool, written: bool) -> None:
        def record(e: Event) -> bytes | None:
            if unencodable:
                self.queue.settle_unsent("failed")  # as the sender's encoder counts it
                return None
            return json.dumps({"v": e.visitor_id}).encode()

        records = self.queue.take_overflow(count, record)
        assert_balanced(self.queue)  # on their way: still pending
        if written:
            self.spooled.extend(records)
        else:
            self.queue.spool_failed(len(records))

    @rule(count=st.integers(1, 5))
    def take(self, count: int) -> None:
        self.queue.take(count)

    @precondition(lambda self: self.queue.in_hand)
    @rule(size=st.integers(10, 400))
    def encode(self, size: int) -> None:
        self.queue.in_hand.popleft()
        self.queue.make_ready(message(size))

    @precondition(lambda self: self.queue.in_hand)
    @rule(outcome=st.sampled_from(["dropped", "failed", "deduped"]))
    def not_sent(self, outcome: Literal["dropped", "failed", "deduped"]) -> None:
        self.queue.in_hand.popleft()
        self.queue.settle_unsent(outcome)

    @precondition(lambda self: self.queue.ready)
    @rule(max_events=st.integers(1, 4))
    def batch(self, max_events: int) -> None:
        taken = self.queue.next_batch(max_events)
        assert taken is not None
        self.outstanding.append(taken)

    @precondition(lambda self: self.outstanding)
    @rule(outcome=st.sampled_from(["sent", "failed"]))
    def settle(self, outcome: Literal["sent", "failed"]) -> None:
        key, _ = self.outstanding.pop(0)
        self.queue.settle(key, outcome)

    @precondition(lambda self: any(len(batch) > 1 for _, batch in self.outstanding))
    @rule()
    def split(self) -> None:
        index = next(i for i, (_, batch) in enumerate(self.outstanding) if len(batch) > 1)
        key, batch = self.outstanding.pop(index)
        self.queue.settle(key, None)
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            self.outstanding.append((self.queue.add_outstanding(half), half))

    @rule()
    def take_back(self) -> None:
        self.queue.take_back()
        self.outstanding.clear()

    @rule(spool=st.booleans(), written=st.booleans())
    def drain(self, spool: bool, written: bool) -> None:
        def encode(e: Event) -> bytes:
            return json.dumps({"v": e.visitor_id}).encode()

        drained = self.queue.drain(encode, encode)
        assert not self.queue.overflow
        self.outstanding.clear()
        if spool:
            self.queue.left_behind(len(drained))
            assert_balanced(self.queue)
            if written:
                self.spooled.extend(drained)
            else:
                self.queue.spool_failed(len(drained))
        else:
            self.queue.lost(len(drained))

    @precondition(lambda self: self.spooled and not self.from_spool)
    @rule(count=st.integers(1, 6))
    def take_from_spool(self, count: int) -> None:
        # As the sender takes: up to half the buffer's room (a buffer of one takes one).
        room = (self.queue.max_events + 1) // 2 - self.queue.buffered()
        self.from_spool = self.spooled[: max(0, min(count, room))]
        del self.spooled[: len(self.from_spool)]

    @precondition(lambda self: self.from_spool)
    @rule(claimed_elsewhere=st.integers(0, 6), skipped=st.integers(0, 2))
    def restore(self, claimed_elsewhere: int, skipped: int) -> None:
        # Pages may have filled the buffer since the take: restore queues them all.
        taken, self.from_spool = self.from_spool, []
        deduped = min(claimed_elsewhere, len(taken))
        self.queue.restore(taken[deduped:], deduped, skipped)

    @invariant()
    def accounting_identity(self) -> None:
        stats = self.queue.stats()
        assert balanced(stats) and min(stats.values()) >= 0, stats
        assert max(stats["deferred"], stats["beacons_dropped"]) <= stats["dropped"]
        # Overshot by at most what was taken back while pages filled the rest.
        max_events = self.queue.max_events
        assert self.queue.buffered() <= max_events + (max_events + 1) // 2
        assert len(self.queue.overflow) <= (self.queue.max_events if self.overflow else 0)
        held = sum(map(len, self.queue.ready)) + sum(len(m) for _, b in self.outstanding for m in b)
        assert self.queue.held_bytes() == held <= self.queue.max_bytes


def assert_balanced(queue: EventQueue) -> None:
    stats = queue.stats()
    assert balanced(stats) and min(stats.values()) >= 0, stats


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_full_queue_drops_and_counts() -> None:
    queue = EventQueue(max_events=2, max_bytes=10_000)
    assert [queue.accept(event(i), closed=False) for i in range(3)] == ["queued", "queued", "full"]
    assert queue.accept(event(9), closed=True) == "closed"
    assert queue.stats()["dropped"] == 2 and queue.buffered() == 2


def test_with_a_spool_a_full_buffer_overflows_instead_of_dropping() -> None:
    queue = EventQueue(max_events=2, max_bytes=10_000, overflow=True)
    verdicts = [queue.accept(event(i), closed=False) for i in range(5)]
    # Two in the buffer, two (the buffer's count again) on their way to the spool.
    assert verdicts == ["queued", "queued", "overflow", "overflow", "full"]
    assert queue.accept(conversion(), closed=False, beacon=True) == "full"  # beacons: never
    assert queue.accept(event(9), closed=True) == "closed"
    stats = queue.stats()
    # Overflowed once-only events were as good as queued: not deferred, still pending.
    assert (stats["overflowed"], stats["dropped"], stats["deferred"]) == (2, 3, 2)
    assert stats["pending"] == 4 and balanced(stats)
    records = queue.take_overflow(10, lambda e: e.visitor_id.encode() if e.visitor_id else None)
    assert records == [b"v2", b"v3"] and not queue.overflow
    assert queue.stats()["pending"] == 4 and queue.in_spool() == 2
    assert queue.accept(event(10), closed=False) == "overflow"  # room again on the way


def test_beacons_get_less_than_half_the_events_and_the_rest_is_for_others() -> None:
    queue = EventQueue(max_events=10, max_bytes=10_000)
    beacons = [queue.accept(conversion(), closed=False, beacon=True) for _ in range(8)]
    assert beacons == ["queued"] * 5 + ["full"] * 3
    others = [queue.accept(event(i), closed=False) for i in range(6)]
    assert others == ["queued"] * 5 + ["full"]
    stats = queue.stats()
    assert (stats["dropped"], stats["beacons_dropped"], stats["deferred"]) == (4, 3, 1)
    assert balanced(stats)


def test_beacons_get_less_than_half_the_bytes() -> None:
    queue = EventQueue(max_events=100, max_bytes=1_000)
    queue.accept(event(0), closed=False)
    queue.take(1)
    queue.in_hand.popleft()
    assert queue.make_ready(message(460))  # 505 bytes held: just over half the byte bound
    assert queue.accept(conversion(), closed=False, beacon=True) == "full"
    assert queue.accept(event(1), closed=False) == "queued"
    assert queue.stats()["beacons_dropped"] == 1


def test_a_refused_once_only_event_is_deferred_unless_its_sender_was_told_otherwise() -> None:
    queue = EventQueue(max_events=1, max_bytes=10_000)
    queue.accept(conversion(), closed=False)
    queue.accept(event(1), closed=False)  # once-only: deferred
    queue.accept(event(2), closed=False, deferrable=False)  # its sender counts it queued
    queue.accept(conversion(), closed=False)  # repeatable: dropped, nothing to defer
    queue.accept(event(3), closed=True)
    stats = queue.stats()
    assert (stats["accepted"], stats["dropped"], stats["deferred"]) == (5, 4, 2)
    assert balanced(stats)


def test_the_byte_bound_counts_ready_and_outstanding_messages() -> None:
    queue = EventQueue(max_events=10, max_bytes=1_000)
    for i in range(3):
        queue.accept(event(i), closed=False)
    queue.take(3)
    queue.in_hand.popleft()
    assert queue.make_ready(message(500))
    assert queue.next_batch(10) is not None  # now outstanding, still within the bound
    queue.in_hand.popleft()
    assert not queue.make_ready(message(500))  # 2 x ~540 bytes > 1,000
    queue.in_hand.popleft()
    assert queue.make_ready(message(100))
    assert queue.stats()["dropped"] == 1


def test_take_back_puts_outstanding_batches_first_in_their_order() -> None:
    queue = EventQueue(max_events=10, max_bytes=10_000)
    queue.ready.extend([b"1", b"2", b"3", b"4", b"5"])
    first = queue.next_batch(2)
    second = queue.next_batch(2)
    assert first is not None and second is not None
    queue.take_back()
    assert list(queue.ready) == [b"1", b"2", b"3", b"4", b"5"]


def test_restoring_its_own_spool_does_not_count_events_twice() -> None:
    queue = EventQueue(max_events=10, max_bytes=10_000)
    for i in range(3):
        queue.accept(event(i), closed=False)
    drained = queue.drain(lambda e: b"{}", lambda e: b"{}")
    queue.left_behind(len(drained))
    assert queue.stats()["pending"] == 3
    queue.restore([*drained, b"{}"])  # ours, and one another process left
    stats = queue.stats()
    assert (stats["accepted"], stats["restored"], stats["pending"]) == (4, 4, 4)


# -- the batcher ---------------------------------------------------------------------------


@given(
    sizes=st.lists(st.one_of(st.integers(1, 300), st.integers(16_000, 32 * 1024)), max_size=120),
    max_events=st.integers(1, 2500),
)
def test_batches_fit_one_request_and_keep_order(sizes: list[int], max_events: int) -> None:
    ready = deque(b"x" * size for size in sizes)
    order = list(ready)
    packed: list[bytes] = []
    while ready:
        batch = take_batch(ready, max_events)
        assert 1 <= len(batch) <= max_events
        assert len(batch) == 1 or len(batch_body(batch, time.time())) <= MAX_BATCH_BYTES
        packed.extend(batch)
    assert packed == order


def test_large_messages_are_split_at_the_request_limit() -> None:
    ready = deque(b"x" * 30_000 for _ in range(40))  # 1.2 MB in all
    sizes = []
    while ready:
        batch = take_batch(ready, 2500)
        sizes.append(len(batch_body(batch, time.time())))
    assert len(sizes) == 3 and max(sizes) <= MAX_BATCH_BYTES
    assert sizes[0] > MAX_BATCH_BYTES - 30_001  # full, not cautious


def test_the_envelope_size_is_what_a_body_adds() -> None:
    assert len(b'{"batch":[],"sentAt":"2026-11-30T01:02:03.456Z"}') == BATCH_ENVELOPE_BYTES

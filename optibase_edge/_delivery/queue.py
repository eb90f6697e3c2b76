"""The bounded queue between the request path and the sender, and its accounting.

An accepted event moves through four places, in order: ``incoming`` (as the
request path left it), ``in_hand`` (taken by the sender for claiming),
``ready`` (encoded, waiting for a batch), ``outstanding`` (in a batch being
sent or in backoff). It leaves them exactly once, as sent, dropped, failed or
deduped; or it is left behind in the spool, still pending, for this process
or the next. A once-only event whose claim failed may, under
``on_store_error="hold"``, wait in a fifth place, ``held``, between
``in_hand`` and ``ready``, until the store answers. With a spool, an event
that finds the buffer full waits in ``overflow`` until the sender appends it
to the spool: ``overflowed`` rather than dropped, and pending in the spool
until this process (when there is room) or another takes it back. So at every
moment::

    accepted == sent + dropped + failed + deduped + pending

where ``pending`` counts the five places, the overflow and what this process
put in the spool (or is putting there). Every move goes
through a method here, which is what keeps that identity true. Plain data and
no I/O: the sender decides when, this decides how much and counts.

Counters outside the identity say what happened: ``overflowed`` (kept for the
spool instead of dropped), ``spooled`` (left there at shutdown), ``restored``
(taken back from it), ``spool_skipped`` (unreadable records there). Two
counters break ``dropped`` down: an event
refused at the door is ``accepted`` and ``dropped``, and, when it is a
once-only event, ``deferred`` too (the request path does not remember it as
sent, so it is emitted again when it next happens: a first-visit event on the
visitor's next request). A beacon refused for want of room is also
``beacons_dropped``. Re-emitted, a deferred event is accepted again: the
identity counts each attempt.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Literal

from .._events import Event
from .batching import take_batch

COUNTERS = (
    "accepted",
    "sent",
    "dropped",
    "failed",
    "deduped",
    "deferred",
    "beacons_dropped",
    "retried",
    "oversized",
    "spooled",
    "overflowed",
    "restored",
    "spool_skipped",
    "batches",
    "store_errors",
    "sent_unclaimed",
)
Settled = Literal["sent", "failed"]


class EventQueue:
    """Bounded by event count (all five places) and by bytes (ready and outstanding).

    With *overflow* (there is a spool), up to *max_events* more wait in
    ``overflow`` for the spool; what finds that full too is dropped.
    """

    def __init__(self, max_events: int, max_bytes: int, overflow: bool = False) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.incoming: deque[Event] = deque()
        # Found the buffer full; for the spool, where the next claim is made.
        self.overflow: deque[Event] = deque()
        self._overflow_limit = max_events if overflow else 0
        # Taken for claiming. Such an event may hold its claim already (the sender
        # was interrupted mid-claim), so it is never claimed again: sent as it is.
        self.in_hand: deque[Event] = deque()
        # Once-only events whose claim failed, oldest first, to be claimed again.
        self.held: deque[Event] = deque()
        self.ready: deque[bytes] = deque()
        self._ready_bytes = 0
        self._outstanding: dict[int, list[bytes]] = {}
        self._outstanding_events = 0
        self._outstanding_bytes = 0
        self._left_behind = 0  # put in the spool by this process: pending, in its hands
        self._batch_ids = itertools.count()

    # -- in ---------------------------------------------------------------------------

    def accept(
        self, event: Event, closed: bool, beacon: bool = False, deferrable: bool = True
    ) -> Literal["queued", "overflow", "closed", "full"]:
        """Count *event* in, and queue it unless delivery is closed or there is no room.

        A *beacon* (a conversion a browser posted) has room only while the buffer
        is less than half full (see :meth:`has_room`). Another event that finds
        the buffer full goes to the overflow when there is one, with room
        ("overflow": as good as queued for its sender). A once-only event refused
        is counted ``deferred`` when *deferrable*: its sender learns it was not
        queued and does not remember it as sent.
        """
        counts = self.counts
        counts["accepted"] += 1
        # The common case inline: a call less on every event.
        if not closed and (self.has_room(True) if beacon else self.buffered() < self.max_events):
            self.incoming.append(event)
            return "queued"
        if not closed and not beacon and len(self.overflow) < self._overflow_limit:
            self.overflow.append(event)
            counts["overflowed"] += 1
            return "overflow"
        counts["dropped"] += 1
        if deferrable and event.once_key is not None:
            counts["deferred"] += 1
        if closed:
            return "closed"
        if beacon:
            counts["beacons_dropped"] += 1
        return "full"

    def has_room(self, beacon: bool) -> bool:
        """An event (a *beacon*) would be queued now.

        It only reads lengths, so another thread may ask: the answer is then
        approximate, never an error.
        """
        if beacon:
            # Anyone may post beacons as fast as they like, with one cookie; they get
            # less than half of each bound. The rest is kept for the request path's
            # own events, above all first-visit Identify and Experiment Viewed, which
            # are every result's denominator. Half leaves honest clicks thousands of
            # events' room through an outage, and page events at least as much.
            return self.buffered() * 2 < self.max_events and self.held_bytes() * 2 < self.max_bytes
        return self.buffered() < self.max_events or len(self.overflow) < self._overflow_limit

    def take(self, count: int) -> None:
        """Move up to *count* incoming events in hand."""
        incoming = self.incoming
        self.in_hand.extend(incoming.popleft() for _ in range(min(count, len(incoming))))

    def take_held(self, count: int) -> None:
        """Move up to *count* held events in hand, oldest first, to be claimed again."""
        held = self.held
        self.in_hand.extend(held.popleft() for _ in range(min(count, len(held))))

    def hold(self, events: list[Event], *, first: bool) -> None:
        """Hold *events*, just taken from in hand, until the store answers.

        *first*: they were held before (and taken back for another try), so they
        go back ahead of the others, in their order.
        """
        if first:
            self.held.extendleft(reversed(events))
        else:
            self.held.extend(events)

    def make_ready(self, message: bytes) -> bool:
        """Queue an encoded message for batching; False (dropped) over the byte bound."""
        if self.held_bytes() + len(message) > self.max_bytes:
            self.counts["dropped"] += 1
            return False
        self.ready.append(message)
        self._ready_bytes += len(message)
        return True

    def settle_unsent(self, outcome: Literal["dropped", "failed", "deduped"]) -> None:
        """Count one event that left the in-hand deque without becoming a message."""
        self.counts[outcome] += 1

    def restore(self, messages: list[bytes], deduped: int = 0, skipped: int = 0) -> None:
        """Take *messages* back from a spool, and *deduped* more claimed elsewhere already.

        Those this process spooled itself are still counted as pending: taking
        them back moves them out of the spool, not into "accepted" a second time.
        All are queued: the sender takes no more than half the buffer's room,
        and pages served while it waited for the spool and the store may have
        filled the rest, so the bound is overshot by at most that, rather than
        claimed events dropped for good. *skipped* unreadable records are only
        counted.
        """
        taken = len(messages) + deduped
        own = min(self._left_behind, taken)
        self._left_behind -= own
        counts = self.counts
        counts["accepted"] += taken - own
        counts["restored"] += taken
        counts["deduped"] += deduped
        counts["spool_skipped"] += skipped
        self.ready.extend(messages)
        self._ready_bytes += sum(map(len, messages))

    # -- batches ----------------------------------------------------------------------

    def next_batch(self, max_events: int) -> tuple[int, list[bytes]] | None:
        """The next batch from the ready messages, now outstanding under its key."""
        if not self.ready:
            return None
        batch = take_batch(self.ready, max_events)
        self._ready_bytes -= sum(map(len, batch))
        return self.add_outstanding(batch), batch

    def add_outstanding(self, batch: list[bytes]) -> int:
        key = next(self._batch_ids)
        self._outstanding[key] = batch
        self._outstanding_events += len(batch)
        self._outstanding_bytes += sum(map(len, batch))
        self.counts["batches"] += 1
        return key

    def settle(self, key: int, outcome: Settled | None) -> None:
        """Take batch *key* off the books, counted as *outcome* (None: it was split)."""
        batch = self._outstanding.pop(key, None)
        if batch is None:
            return
        self._outstanding_events -= len(batch)
        self._outstanding_bytes -= sum(map(len, batch))
        if outcome is not None:
            self.counts[outcome] += len(batch)

    def take_back(self) -> None:
        """Every outstanding batch back to the front of the ready queue, in order.

        For when the loop whose tasks held them is gone.
        """
        for key in sorted(self._outstanding, reverse=True):
            batch = self._outstanding.pop(key)
            self.ready.extendleft(reversed(batch))
            self._ready_bytes += sum(map(len, batch))
        self._outstanding_events = self._outstanding_bytes = 0

    # -- out, at shutdown -------------------------------------------------------------

    def take_overflow(self, count: int, record: Callable[[Event], bytes | None]) -> list[bytes]:
        """Up to *count* overflowed events as spool records (by *record*), now on their way.

        *record* counts its own failures; the records are pending until
        :meth:`spool_failed` says otherwise.
        """
        overflow = self.overflow
        taken = [
            r
            for _ in range(min(count, len(overflow)))
            if (r := record(overflow.popleft())) is not None
        ]
        self._left_behind += len(taken)
        return taken

    def drain(
        self,
        encode: Callable[[Event], bytes | None],
        record: Callable[[Event], bytes | None],
    ) -> list[bytes]:
        """Empty all five places and the overflow into a list of records, oldest batch first.

        Events not yet encoded are encoded with *encode*, the overflow with
        *record* (both count their own failures); the result must then be
        :meth:`left_behind` or :meth:`lost`.
        """
        # A held event's claim failed, and may have landed: with its key, the taker
        # would count it deduped and nobody would send it. Without, it is sent.
        unsent = (*self.in_hand, *self.held, *self.incoming)
        messages = [m for e in unsent if (m := encode(e)) is not None]
        # The overflow was never claimed: its records carry their keys, for the taker.
        messages.extend(m for e in self.overflow if (m := record(e)) is not None)
        self.overflow.clear()
        self.in_hand.clear()
        self.held.clear()
        self.incoming.clear()
        messages.extend(self.ready)
        self.ready.clear()
        self._ready_bytes = 0
        for key in sorted(self._outstanding):
            messages.extend(self._outstanding[key])
        self._outstanding.clear()
        self._outstanding_events = self._outstanding_bytes = 0
        return messages

    def left_behind(self, count: int) -> None:
        """*count* drained messages are on their way to the spool: still pending.

        Counted ``spooled`` once there, or :meth:`spool_failed`.
        """
        self._left_behind += count

    def lost(self, count: int) -> None:
        """*count* drained messages could not be kept anywhere."""
        self.counts["failed"] += count

    def spool_failed(self, count: int) -> None:
        """*count* records on their way to the spool never got there."""
        self._left_behind -= count
        self.counts["failed"] += count

    def in_spool(self) -> int:
        """Records this process put in the spool (or is putting there), not yet taken back."""
        return self._left_behind

    # -- reading ----------------------------------------------------------------------

    def buffered(self) -> int:
        """Events held in memory, in any of the five places."""
        return (
            len(self.incoming)
            + len(self.in_hand)
            + len(self.held)
            + len(self.ready)
            + self._outstanding_events
        )

    def held_bytes(self) -> int:
        """Bytes of encoded messages in memory (ready and outstanding): the byte bound's measure."""
        return self._ready_bytes + self._outstanding_bytes

    def pending(self) -> int:
        return self.buffered() + len(self.overflow) + self._left_behind

    def stats(self) -> dict[str, int]:
        return {**self.counts, "pending": self.pending(), "held": len(self.held)}

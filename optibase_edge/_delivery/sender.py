"""Fire-and-forget delivery of events to a transport, in the app's own event loop.

The request path calls :meth:`Delivery.submit`, which only appends to the
bounded :class:`~.queue.EventQueue`. One background task turns events into
Segment messages (claiming once-only keys in the dedupe store first) and packs
them into batches; each batch gets its own task, so a batch waiting out a
backoff never holds up the ones behind it. At most ``max_in_flight`` sends run
at once. The queue keeps the accounting identity; this module keeps time.

With a spool (``spool_path``), what finds the buffer full is appended to the
spool instead of dropped, and taken back when there is room (see
:mod:`.spool`); what is left at shutdown goes there too.

One event loop at a time: when a later loop takes over (a second
``asyncio.run``, a restarted server), what the old loop's tasks held is taken
back and sent from the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .._events import Event
from .._segment import MAX_BATCH_EVENTS, EventTooLarge, encode, to_message
from .._settings import Settings
from .breaker import Breaker
from .log import RateLimitedLog
from .queue import EventQueue
from .retry import next_step
from .spool import Spool, open_spool, record
from .stores import DedupeStore
from .transports import Batch, Outcome, Transport

logger = logging.getLogger("optibase_edge")

_CLAIM_CHUNK = 100  # keys per claim_many call: one store round trip per chunk
_CLOSE_WAIT = 1.0  # seconds aclose() gives cancelled tasks and the store to wind down


class Delivery:
    """The background sender between the request path and a transport."""

    def __init__(self, settings: Settings, transport: Transport, store: DedupeStore) -> None:
        self._settings = settings
        self._transport = transport
        self._store = store
        target = settings.spool_path
        self._spool: Spool | None = (
            None if target is None else open_spool(target, settings.request_timeout)
        )
        self._queue = EventQueue(
            settings.max_buffer_events, settings.max_buffer_bytes, overflow=target is not None
        )
        self._spool_may_hold = True  # records to take back, as far as this process knows
        self._spool_op: asyncio.Task[None] | None = None  # one spool call at a time
        self._batch_limit = min(settings.max_batch_events, MAX_BATCH_EVENTS)
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._sending = 0  # batch tasks waiting for or holding a slot (not in backoff)
        self._sender_idle = False  # the sender waits for a first event: submit wakes it
        self._hurry = 0  # flushes in progress: batches go out without waiting to fill
        self._closed = False
        self._restored = False
        self._log = RateLimitedLog(settings.segment_write_key)
        self._breaker = Breaker()

    # -- the request path -------------------------------------------------------------

    def submit(self, event: Event, *, beacon: bool = False) -> bool:
        """Queue *event*; O(1), never blocks, never raises. True when it is queued.

        False when it is dropped (counted): delivery is closed, the buffer is
        full (and, with a spool, so is the overflow on its way there), or the
        event is a *beacon* (a conversion a browser posted) and the buffer is
        half full, the rest being kept for page events. An event that goes to
        the spool instead counts ``overflowed``, and True: it will be sent. A once-only
        event refused this way is counted ``deferred``: the caller must not
        remember it as sent, so that it is emitted again.

        From a worker thread (a sync view) the event is handed to the loop's
        thread, and the answer is whether there is room at the call. Should the
        buffer fill up before the loop takes it, it is dropped, and not counted
        ``deferred``: its caller was told it was queued.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
            owner = self._loop
            if owner is not None and owner.is_running():
                # A worker thread (a sync view): counters and deques are only ever
                # touched from the loop's own thread, so hand the event over.
                queued = not self._closed and self._queue.has_room(beacon)
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    owner.call_soon_threadsafe(self._accept, event, owner, beacon, not queued)
                    return queued
        return self._accept(event, loop, beacon)

    def _accept(
        self,
        event: Event,
        loop: asyncio.AbstractEventLoop | None,
        beacon: bool = False,
        deferrable: bool = True,
    ) -> bool:
        verdict = self._queue.accept(event, self._closed, beacon, deferrable)
        if verdict == "overflow":
            self._log.warning("overflow", "optibase: event buffer full, events go to the spool")
            self._wakeup.set()
            if loop is not None and (
                loop is not self._loop or self._task is None or self._task.done()
            ):
                self._start_in(loop)
            return True
        if verdict != "queued":
            if verdict == "closed":
                self._log.warning("closed", "optibase: event dropped: delivery is closed")
            elif beacon:
                self._log.warning(
                    "beacons", "optibase: collector conversions dropped: half the buffer is full"
                )
            else:
                self._log.warning("full", "optibase: event buffer full, events are being dropped")
            return False
        if loop is None:
            return True  # picked up by the next start() or flush() in a loop
        if loop is not self._loop or self._task is None or self._task.done():
            self._start_in(loop)
        elif self._sender_idle or len(self._queue.incoming) >= self._batch_limit:
            self._wakeup.set()  # otherwise the sender lets the batch fill for flush_interval
        return True

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender in the running loop, and take over the spool, if any.

        After :meth:`aclose`, this opens delivery again: an app can go through
        more than one lifespan in a process (a test client used twice).
        """
        if self._closed:
            self._closed = False
            self._restored = False  # what this process spooled at close comes back
            self._spool_may_hold = True
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._task is None or self._task.done():
            self._start_in(loop)
        if not self._restored:
            # Here rather than only in the task: a flush() right after sees it.
            self._restored = True
            await self._spool_step(self._take_back)

    def _start_in(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            if self._loop is not None:
                # The old loop is gone (a test client, a restarted server) and its
                # tasks with it: the batches they held go back to the queue.
                self._queue.take_back()
                self._batch_tasks.clear()
            # Loop-bound primitives are only replaced with the loop: a flush waiting
            # on the current ones must still be woken when the task is restarted.
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._slots = asyncio.Semaphore(self._settings.max_in_flight)
            self._sending = 0
            self._hurry = 0
            self._sender_idle = False
        self._task = loop.create_task(self._run(), name="optibase-delivery")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending (buffered, in flight or in backoff), or *timeout*.

        Returns True when nothing is pending. What is left at the deadline stays
        pending (and is spooled by :meth:`aclose` when a spool is configured).
        """
        queue = self._queue
        if self._closed:
            return queue.pending() == 0
        await self.start()
        if queue.pending() == 0:
            return True
        idle = self._idle
        self._hurry += 1
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                while self._work_left():  # aclose() elsewhere may spool it all: then done
                    idle.clear()
                    await idle.wait()
        except TimeoutError:
            pass
        finally:
            self._hurry = max(0, self._hurry - 1)
        return queue.pending() == 0

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush within *timeout* (default ``shutdown_timeout``), spool what is left, stop."""
        if self._closed:
            return
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.flush(self._settings.shutdown_timeout if timeout is None else timeout)
        finally:
            # Even when the flush itself is cancelled: nothing taken is lost. A
            # cancelled task settles nothing more, so what it held can be spooled
            # right away, before it has wound down.
            self._closed = True
            loop = asyncio.get_running_loop()
            tasks = [
                t
                for t in (self._task, *self._batch_tasks)
                if t is not None and not t.done() and t.get_loop() is loop
            ]
            for task in tasks:
                task.cancel()
            op = self._spool_op
            if op is not None and not op.done():
                # A spool call under way finishes (bounded by request_timeout), so
                # what it took is accounted for before the rest is spooled.
                await asyncio.wait([op], timeout=self._settings.request_timeout + _CLOSE_WAIT)
            await self._spool_leftovers()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT)
        with contextlib.suppress(Exception):
            await self._transport.aclose()
        if self._spool is not None:
            with contextlib.suppress(Exception):
                await self._spool.aclose()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_WAIT):
                await self._store.aclose()

    def stats(self) -> dict[str, int]:
        """Counters; ``accepted == sent + dropped + failed + deduped + pending`` always."""
        return self._queue.stats()

    # -- the sender -------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        interval = self._settings.flush_interval
        while True:
            if (
                not queue.incoming
                and not queue.in_hand
                and not self._can_dispatch()
                and not self._spool_work()
            ):
                self._notify_if_idle()
                self._sender_idle = True
                self._wakeup.clear()
                # Held events are tried again once the breaker lets the store be asked.
                waiting = queue.held or (self._spool is not None and self._spool_may_hold)
                retry_in = self._breaker.wait() if waiting else None
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(retry_in):
                            await self._wakeup.wait()
                finally:
                    self._sender_idle = False
            if not self._hurry and len(queue.incoming) + len(queue.ready) < self._batch_limit:
                # Give a batch time to fill; a flush or a full batch cuts this short.
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wakeup.wait()
            try:
                await self._prepare()
                self._dispatch_batches()
                if queue.overflow:
                    await self._spool_step(self._spool_overflow)
                if self._spool_work():
                    await self._spool_step(self._take_back)
            except Exception as exc:  # never let one bad event stop delivery
                self._log.warning("sender", f"optibase: preparing events failed: {exc!r}")
                await asyncio.sleep(interval)  # and never spin on a persistent error

    async def _prepare(self) -> None:
        queue = self._queue
        in_hand = queue.in_hand
        while in_hand:  # left over from an interrupted claim: see EventQueue
            self._make_ready(in_hand[0])
            in_hand.popleft()
        # Held events first, as they are older; what is here now only, so that a
        # busy site can't keep us looping. A failure stops the held ones' turn:
        # the breaker is open again.
        todo = len(queue.held)
        while todo > 0 and self._breaker.allows():
            take = min(todo, _CLAIM_CHUNK)
            todo -= take
            queue.take_held(take)
            await self._claim_in_hand(retrying=True)
        todo = len(queue.incoming)
        first = True
        while todo > 0:
            if not first:
                # Each chunk costs about a millisecond of encoding: pages are served
                # between chunks rather than after the whole backlog.
                await asyncio.sleep(0)
            first = False
            take = min(todo, _CLAIM_CHUNK)
            todo -= take
            queue.take(take)
            await self._claim_in_hand(retrying=False)

    async def _claim_in_hand(self, *, retrying: bool) -> None:
        """Claim the once-only events in hand, then settle each event in hand.

        A claim that failed (or was not tried: the breaker is open) leaves the
        event to ``on_store_error``: sent unclaimed, or held (*retrying*: back
        ahead of the other held events, where it was).
        """
        queue = self._queue
        in_hand = queue.in_hand
        claimed = await self._claim([k for e in in_hand if (k := e.once_key) is not None])
        claims = None if claimed is None else iter(claimed)
        hold = self._settings.on_store_error == "hold"
        held: list[Event] = []
        while in_hand:
            event = in_hand.popleft()
            if event.once_key is None:
                self._make_ready(event)
            elif claims is not None:
                if next(claims):
                    self._make_ready(event)
                else:
                    queue.settle_unsent("deduped")
            elif hold:
                held.append(event)
            else:
                queue.counts["sent_unclaimed"] += 1
                self._make_ready(event)
        if held:
            queue.hold(held, first=retrying)

    async def _claim(self, keys: list[str]) -> list[bool] | None:
        """What the store answers for *keys*; None when it failed or was not asked."""
        if not keys:
            return []
        if not self._breaker.allows():
            return None  # it failed a moment ago: the policy applies without a wait
        try:
            # A store that hangs must not stall every batch behind it.
            async with asyncio.timeout(self._settings.request_timeout):
                claimed = await self._store.claim_many(keys, self._settings.dedupe_ttl)
            if len(claimed) != len(keys):
                raise ValueError(f"claim_many answered {len(claimed)} of {len(keys)} keys")
        except Exception as exc:
            self._breaker.failed()
            self._queue.counts["store_errors"] += len(keys)
            # "send": at-least-once beats never, and Segment's own messageId dedupe
            # backs us up. "hold": the events wait, within the buffer's bound.
            then = "sending" if self._settings.on_store_error == "send" else "holding"
            self._log.warning("store", f"optibase: dedupe store unavailable ({exc!r}); {then}")
            return None
        self._breaker.succeeded()
        return claimed

    def _make_ready(self, event: Event) -> None:
        message = self._encode(event)
        if message is not None and not self._queue.make_ready(message):
            self._log.warning("bytes", "optibase: buffer over its byte limit; dropping")

    def _encode(self, event: Event) -> bytes | None:
        """The message for *event*; None (and counted) when it cannot be sent."""
        try:
            return encode(to_message(event))
        except EventTooLarge as exc:
            self._queue.settle_unsent("dropped")
            self._queue.counts["oversized"] += 1
            self._log.warning("oversized", f"optibase: event over 32 KB not sent: {exc}")
        except Exception as exc:
            self._queue.settle_unsent("failed")
            self._log.warning("encode", f"optibase: could not encode an event: {exc!r}")
        return None

    def _can_dispatch(self) -> bool:
        return bool(self._queue.ready) and self._sending < self._settings.max_in_flight

    def _dispatch_batches(self) -> None:
        """Cut batches from the ready messages while a send slot is free.

        Cutting them all at once made a backlog into many small batches queued
        for a slot; each send costs about as much whatever its size, so at
        saturation the sender fell behind and the buffer overflowed. Waiting for
        a slot makes a backlog into full batches instead.
        """
        while self._can_dispatch():
            taken = self._queue.next_batch(self._batch_limit)
            assert taken is not None  # ready is not empty
            self._start_batch(*taken, time.monotonic() + self._settings.retry_max_time)

    def _start_batch(self, key: int, messages: list[bytes], deadline: float) -> None:
        assert self._loop is not None
        self._sending += 1
        task = self._loop.create_task(self._deliver(key, messages, deadline))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _deliver(self, key: int, messages: list[bytes], deadline: float) -> None:
        # A cancelled delivery leaves its batch outstanding: aclose() spools it, a
        # new loop takes it back. Only a settled step takes it off the books.
        queue = self._queue
        loop = self._loop
        attempt = 0
        sending = True  # counted in self._sending
        try:
            while True:
                async with self._slots:
                    outcome = await self._send(messages)
                step = next_step(
                    outcome.status,
                    outcome.retry_after,
                    len(messages),
                    attempt,
                    deadline - time.monotonic(),
                )
                what = outcome.error or outcome.status
                if step.action == "sent":
                    queue.settle(key, "sent")
                    return
                if step.action == "split":
                    # Isolate the bad event by halving; the halves keep this batch's
                    # deadline, as retry_max_time is a total.
                    queue.settle(key, None)
                    middle = len(messages) // 2
                    for half in (messages[:middle], messages[middle:]):
                        self._start_batch(queue.add_outstanding(half), half, deadline)
                    return
                if step.action == "failed":
                    self._log.warning(
                        f"status{outcome.status}",
                        f"optibase: Segment refused a batch of {len(messages)} with {what}",
                    )
                    queue.settle(key, "failed")
                    return
                if step.action == "gave_up":
                    self._log.warning(
                        "gaveup",
                        f"optibase: gave up on a batch of {len(messages)} after "
                        f"{attempt + 1} attempts ({what})",
                    )
                    queue.settle(key, "failed")
                    return
                self._log.warning("retry", f"optibase: batch not delivered ({what}); retrying")
                queue.counts["retried"] += 1
                # In backoff this batch frees its place for a new one: an outage costs
                # each batch its own waits, and never holds up the ones behind it.
                sending = False
                self._sending -= 1
                self._dispatch_batches()
                await asyncio.sleep(step.wait)
                sending = True
                self._sending += 1
                attempt += 1
        finally:
            # Only for this loop's tasks: an abandoned loop's coroutine closed later
            # (collected) must not touch the counters of the loop that took over.
            if loop is self._loop:
                if sending:
                    self._sending -= 1
                if not self._closed:
                    self._dispatch_batches()
                    if self._spool_may_hold:
                        self._wakeup.set()  # room, perhaps, to take back from the spool
                self._notify_if_idle()

    async def _send(self, messages: list[bytes]) -> Outcome:
        try:
            return await self._transport.send(Batch(messages, time.time()))
        except Exception as exc:
            # Whatever the transport raises, the batch stays accounted for and is
            # retried like a network error, within retry_max_time.
            return Outcome(0, error=f"unexpected {type(exc).__name__}: {exc}")

    def _notify_if_idle(self) -> None:
        if self._queue.buffered() == 0:
            self._idle.set()

    # -- the spool --------------------------------------------------------------------

    def _work_left(self) -> bool:
        """Something to send, here or still in the spool: what flush() waits for."""
        queue = self._queue
        spooled = self._spool is not None and self._spool_may_hold
        return bool(queue.buffered() or queue.overflow or spooled)

    def _room_to_take_back(self) -> int:
        # Up to half the buffer (rounded up: a buffer of one takes one), so that a
        # busy site's own events still find room rather than go to the spool.
        return (self._queue.max_events + 1) // 2 - self._queue.buffered()

    def _spool_waits_for_store(self) -> bool:
        """Under "hold", the spool keeps its records while the breaker leaves the store alone."""
        return self._settings.on_store_error == "hold" and not self._breaker.allows()

    def _spool_work(self) -> bool:
        queue = self._queue
        if self._spool is None or self._closed:
            return False
        if queue.overflow:
            return True
        if self._spool_waits_for_store():
            return False  # the idle wait ends with the breaker's cooldown
        return self._spool_may_hold and self._room_to_take_back() > 0

    async def _spool_step(self, step: Callable[[Spool], Coroutine[Any, Any, None]]) -> None:
        """Run *step* as the only spool call under way; it finishes even if we are cancelled.

        A cancelled caller must not leave records half-taken: the step is a task
        of its own, and aclose() waits for it before spooling what is left.
        """
        spool = self._spool
        if spool is None:
            return
        while (op := self._spool_op) is not None and not op.done():
            await asyncio.wait([op])
        self._spool_op = asyncio.get_running_loop().create_task(self._closing_after(step, spool))
        await asyncio.wait([self._spool_op])
        self._notify_if_idle()

    async def _closing_after(
        self, step: Callable[[Spool], Coroutine[Any, Any, None]], spool: Spool
    ) -> None:
        await step(spool)
        if self._closed:
            # aclose() stopped waiting for this step (a store or spool that hangs):
            # what it took back must not stay in a closed queue, unsent.
            await self._spool_leftovers()

    def _record(self, event: Event) -> bytes | None:
        """The spool record for an unclaimed *event*: whoever takes it claims first."""
        message = self._encode(event)
        return None if message is None else record(message, event.once_key)

    async def _spool_overflow(self, spool: Spool) -> None:
        queue = self._queue
        records: list[bytes] = []
        while queue.overflow:
            if records:
                await asyncio.sleep(0)  # encoding is the loop's time: pages between chunks
            records += queue.take_overflow(_CLAIM_CHUNK, self._record)
        # Before the write: a flush() meanwhile must wait for these to come back.
        self._spool_may_hold = True
        try:
            await spool.append(records)
        except Exception as exc:
            queue.spool_failed(len(records))
            self._log.warning(
                "overflow-lost",
                f"optibase: the buffer was full and the spool {spool} failed ({exc!r}): "
                f"{len(records)} events lost",
            )
            return

    async def _take_back(self, spool: Spool) -> None:
        """Take back from the spool as much as there is room for; claim what needs it.

        Under ``on_store_error="hold"``, not while the breaker keeps the store alone.
        """
        limit = self._room_to_take_back()
        if limit <= 0 or self._spool_waits_for_store():
            return
        try:
            taken = await spool.take(limit)
        except Exception as exc:
            # Not again until this process appends: a spool that is down must not
            # be asked in a loop. Its records wait for the next taker.
            self._spool_may_hold = False
            logger.error("optibase: could not take back from the spool %s: %r", spool, exc)
            return
        if taken is None or len(taken.records) + taken.skipped < limit:
            self._spool_may_hold = False
        if taken is None:
            return
        records = taken.records
        keys = [k for r in records if (k := r.once_key) is not None]
        claimed = await self._claim(keys)
        if claimed is None:
            # Whatever the policy: a claim that failed may have landed, and then every
            # other taker would count it deduped, so only sending them loses nothing
            # (a copy sent elsewhere has the same messageId). Under "hold" this is
            # rare: nothing is taken back while the breaker is open.
            self._queue.counts["sent_unclaimed"] += len(keys)
            claimed = [True] * len(keys)
        claims = iter(claimed)
        messages = [r.message for r in records if r.once_key is None or next(claims)]
        self._queue.restore(messages, len(records) - len(messages), taken.skipped)
        logger.info(
            "optibase: took back %d events from the spool %s (%d unreadable records skipped)",
            len(records),
            spool,
            taken.skipped,
        )
        if self._queue.ready:
            self._wakeup.set()

    async def _spool_leftovers(self) -> None:
        # No claims for events taken already (they may hold one): the process taking
        # them sends them as they are, and Segment's messageId dedupe covers a rare
        # repeat. The overflow was never claimed: its records carry their keys.
        queue = self._queue
        leftovers = queue.drain(self._encode, self._record)
        self._notify_if_idle()  # wakes a flush() waiting elsewhere
        if not leftovers:
            return
        spool = self._spool
        if spool is None:
            queue.lost(len(leftovers))
            self._log.warning(
                "lost", f"optibase: {len(leftovers)} events undelivered at shutdown (no spool_path)"
            )
            return
        queue.left_behind(len(leftovers))
        try:
            await spool.append(leftovers)
        except Exception as exc:
            queue.spool_failed(len(leftovers))
            logger.error(
                "optibase: could not write %d undelivered events to the spool %s at shutdown "
                "(%r): they are lost",
                len(leftovers),
                spool,
                exc,
            )
            return
        queue.counts["spooled"] += len(leftovers)
        logger.info("optibase: %d undelivered events spooled to %s", len(leftovers), spool)

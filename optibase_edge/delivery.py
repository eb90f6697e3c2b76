"""Fire-and-forget delivery of events to Segment, in the app's own event loop.

The request path calls :meth:`Delivery.submit`, which only appends to a bounded
deque. One background task turns events into Segment messages (claiming
once-only keys in the shared dedupe store first), packs them into batches, and
hands each batch to its own task, so a batch waiting out a backoff never holds
up the ones behind it. At most ``max_in_flight`` HTTP requests run at once.

Every accepted event is, at every moment, in exactly one place: sent, dropped,
failed, deduped, or still pending (in memory, or in the spool after
:meth:`Delivery.aclose`). :meth:`Delivery.stats` counts them.

One event loop at a time: when a later loop takes over (a second
``asyncio.run``, a restarted server), what the old loop's tasks held is taken
back and sent from the new one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gzip
import itertools
import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import BinaryIO, Protocol

import httpx2

from ._version import __version__
from .config import Settings
from .dedupe import DedupeStore
from .events import Event
from .segment import (
    BATCH_ENVELOPE_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    EventTooLarge,
    batch_body,
    encode,
    to_message,
)

logger = logging.getLogger("optibase_edge")

_RETRY_AFTER_CAP = 60.0
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 30.0
_NOT_RETRIED_5XX = {501, 505}
_SPLIT_STATUSES = {400, 413}
_CLAIM_CHUNK = 100  # keys per claim_many call: one store round trip per chunk
_GZIP_IN_THREAD = 64 * 1024  # bigger bodies are compressed off the event loop
_CLOSE_WAIT = 1.0  # seconds aclose() gives cancelled tasks and the store to wind down

_COUNTERS = (
    "accepted",
    "sent",
    "dropped",
    "failed",
    "deduped",
    "retried",
    "oversized",
    "spooled",
    "restored",
    "batches",
    "store_errors",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt to send a batch came to; status 0 is a network error."""

    status: int
    retry_after: float | None = None
    error: str | None = None


class Transport(Protocol):
    async def send(self, items: list[bytes], sent_at: float) -> Outcome: ...

    async def aclose(self) -> None: ...


class SegmentTransport:
    """``POST {base}/v1/batch``, gzip, Basic auth with the write key."""

    def __init__(self, base_url: str, write_key: str, timeout: float) -> None:
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self._url = f"{base_url}/v1/batch"
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"optibase-edge/{__version__}",
        }
        self._timeout = timeout
        self._client: httpx2.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, items: list[bytes], sent_at: float) -> Outcome:
        raw = batch_body(items, sent_at)
        # Compressing ~500 KB takes milliseconds: not on the loop that serves pages.
        body = await asyncio.to_thread(_gzip, raw) if len(raw) > _GZIP_IN_THREAD else _gzip(raw)
        client = self._client_for_this_loop()
        try:
            # httpx's timeout is per phase (connect, each read...): a sink trickling
            # bytes could hold a request forever, so the whole exchange is bounded too.
            async with asyncio.timeout(self._timeout):
                response = await client.post(self._url, content=body, headers=self._headers)
        except (httpx2.HTTPError, TimeoutError) as exc:
            return Outcome(0, error=f"{type(exc).__name__}: {exc}")
        return Outcome(response.status_code, parse_retry_after(response.headers.get("retry-after")))

    def _client_for_this_loop(self) -> httpx2.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # Connections belong to the loop that opened them.
            self._client = httpx2.AsyncClient(timeout=self._timeout)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


def _gzip(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=6, mtime=0)


class JsonlTransport:
    """Development mode with no write key: one Segment message per line in a local file."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def send(self, items: list[bytes], sent_at: float) -> Outcome:
        try:
            with open(self._path, "ab") as file:
                file.write(b"".join(item + b"\n" for item in items))
        except OSError as exc:
            return Outcome(0, error=str(exc))
        return Outcome(200)

    async def aclose(self) -> None:
        return None


class Delivery:
    """The background queue between the request path and Segment."""

    def __init__(self, settings: Settings, store: DedupeStore, transport: Transport) -> None:
        self._settings = settings
        self._store = store
        self._transport = transport
        self._batch_limit = min(settings.max_batch_events, MAX_BATCH_EVENTS)
        self._incoming: deque[Event] = deque()
        # Taken for claiming. Such an event may hold its claim already (the sender
        # was interrupted mid-claim), so it is never claimed again: sent as it is.
        self._in_hand: deque[Event] = deque()
        self._ready: deque[bytes] = deque()
        self._ready_bytes = 0
        self._outstanding: dict[int, list[bytes]] = {}  # batches being sent or in backoff
        self._outstanding_events = 0
        self._outstanding_bytes = 0
        self._batch_ids = itertools.count()
        self._left_behind = 0  # spooled at close: pending, in the next process's hands
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._sender_idle = False  # the sender waits for a first event: submit wakes it
        self._hurry = 0  # flushes in progress: batches go out without waiting to fill
        self._closed = False
        self._restored = False
        self._log = _RateLimitedLog(secrets=_secrets(settings.segment_write_key))
        self._counts = dict.fromkeys(_COUNTERS, 0)

    # -- the request path -------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """Queue *event*; O(1), never blocks, never raises. Drops (counted) when full."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
            owner = self._loop
            if owner is not None and owner.is_running():
                # A worker thread (a sync view): counters and deques are only ever
                # touched from the loop's own thread, so hand the event over.
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    owner.call_soon_threadsafe(self._accept, event, owner)
                    return
        self._accept(event, loop)

    def _accept(self, event: Event, loop: asyncio.AbstractEventLoop | None) -> None:
        counts = self._counts
        counts["accepted"] += 1
        if self._closed:
            counts["dropped"] += 1
            self._log.warning("closed", "optibase: event dropped: delivery is closed")
            return
        if self._buffered() >= self._settings.max_buffer_events:
            counts["dropped"] += 1
            self._log.warning("full", "optibase: event buffer full, events are being dropped")
            return
        self._incoming.append(event)
        if loop is None:
            return  # picked up by the next start() or flush() in a loop
        if loop is not self._loop or self._task is None or self._task.done():
            self._start_in(loop)
        elif self._sender_idle or len(self._incoming) >= self._batch_limit:
            self._wakeup.set()  # otherwise the sender lets the batch fill for flush_interval

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender in the running loop, and take over the spool, if any.

        After :meth:`aclose`, this opens delivery again: an app can go through
        more than one lifespan in a process (a test client used twice).
        """
        if self._closed:
            self._closed = False
            self._restored = False  # what this process spooled at close comes back
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._task is None or self._task.done():
            self._start_in(loop)
        self._restore_spool()  # here rather than in the task: a flush() right after sees it

    def _start_in(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            if self._loop is not None:
                self._take_back()
            # Loop-bound primitives are only replaced with the loop: a flush waiting
            # on the current ones must still be woken when the task is restarted.
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._slots = asyncio.Semaphore(self._settings.max_in_flight)
            self._hurry = 0
            self._sender_idle = False
        self._task = loop.create_task(self._run(), name="optibase-delivery")

    def _take_back(self) -> None:
        # The old loop is gone (a test client, a restarted server) and its tasks with
        # it: batches they held go back to the front of the queue, in their order.
        for key in sorted(self._outstanding, reverse=True):
            batch = self._outstanding.pop(key)
            self._ready.extendleft(reversed(batch))
            self._ready_bytes += sum(map(len, batch))
        self._outstanding_events = self._outstanding_bytes = 0
        self._batch_tasks.clear()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending (buffered, in flight or in backoff), or *timeout*.

        Returns True when nothing is pending. What is left at the deadline stays
        pending (and is spooled by :meth:`aclose` when a spool is configured).
        """
        if self._closed:
            return self._pending() == 0
        await self.start()
        if self._pending() == 0:
            return True
        idle = self._idle
        self._hurry += 1
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                while self._buffered():  # aclose() elsewhere may spool it all: then done
                    idle.clear()
                    await idle.wait()
        except TimeoutError:
            pass
        finally:
            self._hurry = max(0, self._hurry - 1)
        return self._pending() == 0

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
            self._spool_leftovers()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT)
        with contextlib.suppress(Exception):
            await self._transport.aclose()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_WAIT):
                await self._store.aclose()

    def stats(self) -> dict[str, int]:
        """Counters; ``accepted == sent + dropped + failed + deduped + pending`` always."""
        return {**self._counts, "pending": self._pending()}

    def _buffered(self) -> int:
        return (
            len(self._incoming) + len(self._in_hand) + len(self._ready) + self._outstanding_events
        )

    def _pending(self) -> int:
        return self._buffered() + self._left_behind

    # -- the sender -------------------------------------------------------------------

    async def _run(self) -> None:
        self._restore_spool()
        interval = self._settings.flush_interval
        while True:
            if not self._incoming and not self._in_hand and not self._ready:
                self._notify_if_idle()
                self._sender_idle = True
                self._wakeup.clear()
                try:
                    await self._wakeup.wait()
                finally:
                    self._sender_idle = False
            if not self._hurry and len(self._incoming) + len(self._ready) < self._batch_limit:
                # Give a batch time to fill; a flush or a full batch cuts this short.
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._wakeup.wait()
            try:
                await self._prepare()
                self._dispatch_batches()
            except Exception as exc:  # never let one bad event stop delivery
                self._log.warning("sender", f"optibase: preparing events failed: {exc!r}")
                await asyncio.sleep(interval)  # and never spin on a persistent error

    async def _prepare(self) -> None:
        in_hand = self._in_hand
        while in_hand:  # left over from an interrupted claim: see __init__
            self._add_ready(self._encode(in_hand[0]))
            in_hand.popleft()
        todo = len(self._incoming)  # what is here now: a busy site can't keep us looping
        while todo > 0:
            take = min(todo, _CLAIM_CHUNK)
            todo -= take
            in_hand.extend(self._incoming.popleft() for _ in range(take))
            claims = iter(await self._claim([k for e in in_hand if (k := e.once_key) is not None]))
            while in_hand:
                event = in_hand.popleft()
                if event.once_key is not None and not next(claims):
                    self._counts["deduped"] += 1
                else:
                    self._add_ready(self._encode(event))

    async def _claim(self, keys: list[str]) -> list[bool]:
        if not keys:
            return []
        try:
            # A store that hangs must not stall every batch behind it.
            async with asyncio.timeout(self._settings.request_timeout):
                claimed = await self._store.claim_many(keys, self._settings.dedupe_ttl)
            if len(claimed) != len(keys):
                raise ValueError(f"claim_many answered {len(claimed)} of {len(keys)} keys")
            return claimed
        except Exception as exc:
            # At-least-once beats never: Segment's own messageId dedupe backs us up.
            self._counts["store_errors"] += len(keys)
            self._log.warning("store", f"optibase: dedupe store unavailable ({exc!r}); sending")
            return [True] * len(keys)

    def _encode(self, event: Event) -> bytes | None:
        try:
            return encode(to_message(event))
        except EventTooLarge as exc:
            self._counts["dropped"] += 1
            self._counts["oversized"] += 1
            self._log.warning("oversized", f"optibase: event over 32 KB not sent: {exc}")
        except Exception as exc:
            self._counts["failed"] += 1
            self._log.warning("encode", f"optibase: could not encode an event: {exc!r}")
        return None

    def _add_ready(self, message: bytes | None) -> None:
        if message is None:
            return
        if self._ready_bytes + self._outstanding_bytes + len(message) > (
            self._settings.max_buffer_bytes
        ):
            self._counts["dropped"] += 1
            self._log.warning("bytes", "optibase: buffer over its byte limit; dropping")
            return
        self._ready.append(message)
        self._ready_bytes += len(message)

    def _dispatch_batches(self) -> None:
        ready = self._ready
        while ready:
            batch: list[bytes] = []
            size = BATCH_ENVELOPE_BYTES  # '{"batch":[],"sentAt":"…"}'
            while ready and len(batch) < self._batch_limit:
                grown = size + len(ready[0]) + (1 if batch else 0)  # a comma between items
                if batch and grown > MAX_BATCH_BYTES:
                    break
                item = ready.popleft()
                self._ready_bytes -= len(item)
                batch.append(item)
                size = grown
            self._start_batch(batch)

    def _start_batch(self, batch: list[bytes], deadline: float | None = None) -> None:
        assert self._loop is not None
        if deadline is None:
            deadline = time.monotonic() + self._settings.retry_max_time
        key = next(self._batch_ids)
        self._outstanding[key] = batch
        self._outstanding_events += len(batch)
        self._outstanding_bytes += sum(map(len, batch))
        self._counts["batches"] += 1
        task = self._loop.create_task(self._deliver(key, batch, deadline))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _deliver(self, key: int, batch: list[bytes], deadline: float) -> None:
        # A cancelled delivery leaves its batch in _outstanding: aclose() spools it, a
        # new loop takes it back. It is only ever removed by _settle().
        attempt = 0
        try:
            while True:
                async with self._slots:
                    outcome = await self._send(batch)  # same items, fresh sentAt
                status = outcome.status
                if 200 <= status < 300:
                    self._settle(key, "sent")
                    return
                if status in _SPLIT_STATUSES and len(batch) > 1:
                    # One bad event must not sink the rest: isolate it by halving.
                    # The halves keep this batch's deadline: retry_max_time is a total.
                    self._settle(key, None)
                    middle = len(batch) // 2
                    self._start_batch(batch[:middle], deadline)
                    self._start_batch(batch[middle:], deadline)
                    return
                if not is_retryable(status):
                    self._log.warning(
                        f"status{status}",
                        f"optibase: Segment refused a batch of {len(batch)} with {status}",
                    )
                    self._settle(key, "failed")
                    return
                remaining = deadline - time.monotonic()
                retry_after = outcome.retry_after
                if retry_after is not None:
                    retry_after = min(retry_after, _RETRY_AFTER_CAP)
                if remaining <= 0 or (retry_after is not None and retry_after > remaining):
                    self._log.warning(
                        "gaveup",
                        f"optibase: gave up on a batch of {len(batch)} after "
                        f"{attempt + 1} attempts ({outcome.error or status})",
                    )
                    self._settle(key, "failed")
                    return
                self._log.warning(
                    "retry", f"optibase: batch not delivered ({outcome.error or status}); retrying"
                )
                self._counts["retried"] += 1
                await asyncio.sleep(min(backoff(attempt, retry_after), remaining))
                attempt += 1
        finally:
            self._notify_if_idle()

    async def _send(self, batch: list[bytes]) -> Outcome:
        try:
            return await self._transport.send(batch, time.time())
        except Exception as exc:
            # Whatever the transport raises, the batch stays accounted for and is
            # retried like a network error, within retry_max_time.
            return Outcome(0, error=f"unexpected {type(exc).__name__}: {exc}")

    def _settle(self, key: int, outcome: str | None) -> None:
        batch = self._outstanding.pop(key, None)
        if batch is None:
            return
        self._outstanding_events -= len(batch)
        self._outstanding_bytes -= sum(map(len, batch))
        if outcome is not None:
            self._counts[outcome] += len(batch)

    def _notify_if_idle(self) -> None:
        if self._buffered() == 0:
            self._idle.set()

    # -- the spool --------------------------------------------------------------------

    def _spool_leftovers(self) -> None:
        leftovers: list[bytes] = []
        for event in (*self._in_hand, *self._incoming):
            # No claims here: the process taking over the spool sends these as they
            # are, and Segment's messageId dedupe covers a rare repeat.
            message = self._encode(event)
            if message is not None:
                leftovers.append(message)
        self._in_hand.clear()
        self._incoming.clear()
        leftovers.extend(self._ready)
        self._ready.clear()
        self._ready_bytes = 0
        for key in sorted(self._outstanding):
            leftovers.extend(self._outstanding[key])
        self._outstanding.clear()
        self._outstanding_events = self._outstanding_bytes = 0
        self._notify_if_idle()  # wakes a flush() waiting elsewhere
        if not leftovers:
            return
        path = self._settings.spool_path
        if path is None:
            self._counts["failed"] += len(leftovers)
            self._log.warning(
                "lost", f"optibase: {len(leftovers)} events undelivered at shutdown (no spool_path)"
            )
            return
        # Leading newline: if a crashed writer left a torn line, it stays a line of
        # its own (skipped on reading) instead of swallowing our first message.
        data = b"\n" + b"".join(item + b"\n" for item in leftovers)
        try:
            # O_APPEND and one write: processes sharing a spool do not interleave.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:  # a regular file only writes short on a full disk or a signal
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            self._counts["failed"] += len(leftovers)
            logger.error("optibase: could not write the spool %s: %s", path, exc)
            return
        self._left_behind += len(leftovers)
        self._counts["spooled"] += len(leftovers)
        logger.info("optibase: %d undelivered events spooled to %s", len(leftovers), path)

    def _restore_spool(self) -> None:
        """Take over the spool left by an earlier process (once; a short blocking read)."""
        path = self._settings.spool_path
        if self._restored or path is None:
            return
        self._restored = True
        taken = path.with_name(f"{path.name}.{os.getpid()}.taking")
        try:
            os.rename(path, taken)  # atomic: of several starting processes one takes it
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.error("optibase: could not take the spool %s: %s", path, exc)
            return
        messages: list[bytes] = []
        skipped = 0
        try:
            with open(taken, "rb") as file:
                for line in _spool_lines(file):
                    if _valid_message(line):
                        messages.append(line)
                    elif line:
                        skipped += 1  # a torn tail from a crash, or not ours
        except OSError as exc:
            logger.error("optibase: could not read the spool %s (kept as %s): %s", path, taken, exc)
            return
        with contextlib.suppress(OSError):
            os.unlink(taken)
        counts = self._counts
        room = self._settings.max_buffer_events - self._buffered()
        bytes_room = self._settings.max_buffer_bytes - self._ready_bytes - self._outstanding_bytes
        # Events this process spooled itself are still counted as pending: taking
        # them back moves them out of the spool, not into "accepted" a second time.
        own = min(self._left_behind, len(messages))
        self._left_behind -= own
        counts["accepted"] += len(messages) - own
        counts["restored"] += len(messages)
        for line in messages:
            if room <= 0 or len(line) > bytes_room:
                counts["dropped"] += 1  # several processes' spools may exceed one buffer
                continue
            room -= 1
            bytes_room -= len(line)
            self._ready.append(line)
            self._ready_bytes += len(line)
        logger.info(
            "optibase: restored %d events from the spool %s (%d unreadable lines skipped)",
            len(messages),
            path,
            skipped,
        )
        if self._loop is not None and self._ready:
            self._wakeup.set()


def _spool_lines(file: BinaryIO) -> Iterator[bytes]:
    """Stripped lines; an over-long one (corrupt: no message is that big) yields b"?"."""
    limit = MAX_EVENT_BYTES + 2
    while True:
        line = file.readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip to the end of it
                line = file.readline(limit)
            yield b"?"
            continue
        yield line.strip()


def _valid_message(line: bytes) -> bool:
    if not line or len(line) > MAX_EVENT_BYTES:
        return False
    try:
        message = json.loads(line)
    except ValueError:  # bad JSON or bad UTF-8
        return False
    return (
        isinstance(message, dict)
        and isinstance(message.get("messageId"), str)
        and isinstance(message.get("type"), str)
    )


def is_retryable(status: int) -> bool:
    """Network errors (0), 408, 429 and 5xx except 501 and 505."""
    return status in (0, 408, 429) or (500 <= status < 600 and status not in _NOT_RETRIED_5XX)


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Full jitter over a capped exponential; never sooner than *retry_after*.

    Jitter even under Retry-After keeps many processes told the same thing from
    coming back in the same instant, and stops a ``Retry-After: 0`` busy loop.
    """
    jitter = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** min(attempt, 32)))
    if retry_after is None:
        return jitter
    return max(min(retry_after, _RETRY_AFTER_CAP), jitter)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP-date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _secrets(write_key: str | None) -> tuple[str, ...]:
    if not write_key:
        return ()
    return (write_key, base64.b64encode(f"{write_key}:".encode()).decode())


class _RateLimitedLog:
    """At most one warning per kind every ``interval`` seconds, with a count of the rest.

    Every message is scrubbed of the write key (and its Basic-auth form), whatever
    an exception from a transport or a store may have put in it.
    """

    def __init__(self, interval: float = 10.0, secrets: tuple[str, ...] = ()) -> None:
        self._interval = interval
        self._secrets = secrets
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if kind in self._last and now - self._last[kind] < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        for secret in self._secrets:
            message = message.replace(secret, "***")
        logger.warning(message)

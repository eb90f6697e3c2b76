"""Fire-and-forget delivery of events to Segment, in the app's own event loop.

The request path calls :meth:`Delivery.submit`, which only appends to a bounded
deque. One background task turns events into Segment messages (claiming
once-only keys in the shared dedupe store first), packs them into batches, and
hands each batch to its own task, so a batch waiting out a backoff never holds
up the ones behind it. At most ``max_in_flight`` HTTP requests run at once.

Every accepted event is, at every moment, in exactly one place: sent, dropped,
failed, deduped, or still pending. :meth:`Delivery.stats` counts them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gzip
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx2

from ._version import __version__
from .config import Settings
from .dedupe import DedupeStore
from .events import Event
from .segment import (
    BATCH_ENVELOPE_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
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
        body = gzip.compress(batch_body(items, sent_at), compresslevel=6, mtime=0)
        client = self._client_for_this_loop()
        try:
            response = await client.post(self._url, content=body, headers=self._headers)
        except httpx2.HTTPError as exc:
            return Outcome(0, error=f"{type(exc).__name__}: {exc}")
        return Outcome(response.status_code, _retry_after(response.headers.get("retry-after")))

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
        self._incoming: deque[Event] = deque()
        self._ready: deque[bytes] = deque()
        self._ready_bytes = 0
        self._in_hand: deque[Event] = deque()  # taken from incoming, not yet encoded
        self._left_behind = 0  # pending at close: spooled, or logged as undelivered
        self._outstanding: dict[int, list[bytes]] = {}  # batches being sent or in backoff
        self._outstanding_bytes = 0
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._idle: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._hurry = 0
        self._closed = False
        self._restored = False
        self._log = _RateLimitedLog()
        self._counts = dict.fromkeys(
            (
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
            ),
            0,
        )

    # -- the request path -------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """Queue *event*; never blocks, never raises. Drops (counted) when the buffer is full."""
        counts = self._counts
        if self._closed:
            counts["accepted"] += 1
            counts["dropped"] += 1
            self._log.warning("closed", "optibase: event dropped: delivery is closed")
            return
        if len(self._incoming) >= self._settings.max_buffer_events:
            counts["accepted"] += 1
            counts["dropped"] += 1
            self._log.warning("full", "optibase: event buffer full, events are being dropped")
            return
        counts["accepted"] += 1
        self._incoming.append(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # picked up by the next start() or flush() in a loop
        if self._loop is not loop or self._task is None or self._task.done():
            self._start_in(loop)
        elif not self._wakeup.is_set():
            self._wakeup.set()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender in the running loop (and take over a spool, if any)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._start_in(loop)

    def _start_in(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None and self._loop is not loop:
            # The old loop is gone (a test client, a restarted server): take back
            # whatever its tasks held, so it is sent from this one.
            self._incoming.extendleft(reversed(self._in_hand))
            self._in_hand.clear()
            for batch in reversed(list(self._outstanding.values())):
                self._ready.extendleft(reversed(batch))
                self._ready_bytes += sum(map(len, batch))
            self._outstanding.clear()
            self._outstanding_bytes = 0
            self._batch_tasks.clear()
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._slots = asyncio.Semaphore(self._settings.max_in_flight)
        if not self._restored:
            self._restored = True
            self._restore_spool()
        self._task = loop.create_task(self._run(), name="optibase-delivery")
        self._wakeup.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything accepted so far is sent or settled, or until *timeout*.

        Returns True when nothing is pending. What is left at the deadline stays
        pending (and is spooled by :meth:`aclose` when a spool is configured).
        """
        if self._pending() == 0:
            return True
        await self.start()
        assert self._idle is not None
        self._hurry += 1
        self._wakeup.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self._pending():
                        self._idle.clear()
                        await self._idle.wait()
        finally:
            self._hurry -= 1
        return self._pending() == 0

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush within *timeout* (default ``shutdown_timeout``), spool what is left, stop."""
        if self._closed:
            return
        await self.flush(self._settings.shutdown_timeout if timeout is None else timeout)
        self._closed = True
        tasks = [t for t in (self._task, *self._batch_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        self._spool_leftovers()
        await self._transport.aclose()
        with contextlib.suppress(Exception):
            await self._store.aclose()

    def stats(self) -> dict[str, int]:
        """Counters; ``accepted == sent + dropped + failed + deduped + pending`` always."""
        return {**self._counts, "pending": self._pending()}

    def _pending(self) -> int:
        return (
            len(self._incoming)
            + len(self._in_hand)
            + len(self._ready)
            + self._left_behind
            + sum(len(batch) for batch in self._outstanding.values())
        )

    # -- the sender -------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self._settings
        while True:
            if not self._incoming and not self._ready:
                self._notify_if_idle()
                self._wakeup.clear()
                await self._wakeup.wait()
            if not self._hurry and len(self._incoming) + len(self._ready) < (
                settings.max_batch_events
            ):
                # Give a batch time to fill; a flush or a full batch cuts this short.
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.flush_interval):
                        await self._wakeup.wait()
            try:
                await self._prepare()
            except Exception:  # never let one bad event stop delivery
                logger.exception("optibase: preparing events failed")
            self._dispatch_batches()

    async def _prepare(self) -> None:
        in_hand = self._in_hand
        in_hand.extend(self._incoming)
        self._incoming.clear()
        while in_hand:
            event = in_hand[0]
            message = self._claim_and_encode(event, await self._claim(event))
            in_hand.popleft()
            if message is None:
                continue
            if self._ready_bytes + self._outstanding_bytes + len(message) > (
                self._settings.max_buffer_bytes
            ):
                self._counts["dropped"] += 1
                self._log.warning("bytes", "optibase: buffer over its byte limit; dropping")
                continue
            self._ready.append(message)
            self._ready_bytes += len(message)

    async def _claim(self, event: Event) -> bool:
        key = event.once_key
        if key is None:
            return True
        try:
            return await self._store.claim(key, self._settings.dedupe_ttl)
        except Exception as exc:
            # At-least-once beats never: Segment's own messageId dedupe backs us up.
            self._counts["store_errors"] += 1
            self._log.warning("store", f"optibase: dedupe store unavailable ({exc!r}); sending")
            return True

    def _claim_and_encode(self, event: Event, claimed: bool) -> bytes | None:
        if not claimed:
            self._counts["deduped"] += 1
            return None
        try:
            return encode(to_message(event))
        except EventTooLarge as exc:
            self._counts["dropped"] += 1
            self._counts["oversized"] += 1
            self._log.warning("oversized", f"optibase: event over 32 KB not sent: {exc}")
        except Exception:
            self._counts["failed"] += 1
            logger.exception("optibase: could not encode an event")
        return None

    def _dispatch_batches(self) -> None:
        limit = min(self._settings.max_batch_events, MAX_BATCH_EVENTS)
        while self._ready:
            batch: list[bytes] = []
            size = BATCH_ENVELOPE_BYTES + 40  # room for sentAt
            while self._ready and len(batch) < limit:
                item = self._ready[0]
                if batch and size + len(item) + 1 > MAX_BATCH_BYTES:
                    break
                self._ready.popleft()
                self._ready_bytes -= len(item)
                batch.append(item)
                size += len(item) + 1
            self._start_batch(batch)

    def _start_batch(self, batch: list[bytes]) -> None:
        assert self._loop is not None
        key = id(batch)
        self._outstanding[key] = batch
        self._outstanding_bytes += sum(map(len, batch))
        self._counts["batches"] += 1
        task = self._loop.create_task(self._deliver(key, batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _deliver(self, key: int, batch: list[bytes]) -> None:
        deadline = time.monotonic() + self._settings.retry_max_time
        attempt = 0
        try:
            while True:
                assert self._slots is not None
                async with self._slots:
                    outcome = await self._transport.send(batch, time.time())
                status = outcome.status
                if 200 <= status < 300:
                    self._settle(key, "sent")
                    return
                if status in _SPLIT_STATUSES and len(batch) > 1:
                    # One bad event must not sink the rest: isolate it by halving.
                    self._settle(key, None)
                    middle = len(batch) // 2
                    self._start_batch(batch[:middle])
                    self._start_batch(batch[middle:])
                    return
                if not _retryable(status):
                    self._log.warning(
                        f"status{status}", f"optibase: Segment refused a batch with {status}"
                    )
                    self._settle(key, "failed")
                    return
                delay = _backoff(attempt, outcome.retry_after)
                if time.monotonic() + delay > deadline:
                    self._log.warning("gaveup", "optibase: gave up on a batch after retrying")
                    self._settle(key, "failed")
                    return
                self._log.warning(
                    "retry", f"optibase: batch not delivered ({outcome.error or status}); retrying"
                )
                self._counts["retried"] += 1
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            self._notify_if_idle()

    def _settle(self, key: int, outcome: str | None) -> None:
        batch = self._outstanding.pop(key, None)
        if batch is None:
            return
        self._outstanding_bytes -= sum(map(len, batch))
        if outcome is not None:
            self._counts[outcome] += len(batch)

    def _notify_if_idle(self) -> None:
        if self._idle is not None and self._pending() == 0:
            self._idle.set()

    # -- the spool --------------------------------------------------------------------

    def _spool_leftovers(self) -> None:
        leftovers: list[bytes] = []
        for event in (*self._in_hand, *self._incoming):
            # Claims are skipped here: the process taking over the spool sends these
            # as they are, and Segment's messageId dedupe covers a rare repeat.
            message = self._claim_and_encode(event, True)
            if message is not None:
                leftovers.append(message)
        self._in_hand.clear()
        self._incoming.clear()
        leftovers.extend(self._ready)
        self._ready.clear()
        self._ready_bytes = 0
        for batch in self._outstanding.values():
            leftovers.extend(batch)
        self._outstanding.clear()
        self._outstanding_bytes = 0
        self._left_behind += len(leftovers)
        path = self._settings.spool_path
        if not leftovers:
            return
        if path is None:
            self._log.warning("lost", f"optibase: {len(leftovers)} events undelivered at shutdown")
            return
        try:
            # One write on an O_APPEND descriptor: processes sharing a spool never interleave.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(item + b"\n" for item in leftovers))
            finally:
                os.close(fd)
        except OSError as exc:
            logger.error("optibase: could not write the spool %s: %s", path, exc)
            return
        self._counts["spooled"] += len(leftovers)

    def _restore_spool(self) -> None:
        path = self._settings.spool_path
        if path is None:
            return
        taken = path.with_name(f"{path.name}.{os.getpid()}.taking")
        try:
            os.rename(path, taken)  # atomic: one process takes each spool
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.error("optibase: could not take the spool %s: %s", path, exc)
            return
        restored = 0
        with open(taken, "rb") as file:
            for line in file:
                line = line.strip()
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # a torn tail from a crash
                if not isinstance(message, dict) or "messageId" not in message:
                    continue
                self._ready.append(line)
                self._ready_bytes += len(line)
                restored += 1
        os.unlink(taken)
        self._counts["accepted"] += restored
        self._counts["restored"] += restored
        if restored:
            logger.info("optibase: restored %d events from the spool %s", restored, path)


def _retryable(status: int) -> bool:
    return status in (0, 408, 429) or (status >= 500 and status not in _NOT_RETRIED_5XX)


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, _RETRY_AFTER_CAP)
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _RateLimitedLog:
    """At most one warning per kind every ``interval`` seconds, with a count of the rest."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self._interval) < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        logger.warning(message)

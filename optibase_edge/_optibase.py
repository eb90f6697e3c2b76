"""The :class:`Optibase` object: a site's experiments, and the queue that reports them."""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from ._assignment import Plan, compile_test
from ._config import Conversion, Test
from ._cookie import CookieCodec
from ._delivery.log import RateLimitedLog
from ._delivery.sender import Delivery
from ._delivery.stores import DedupeStore, MemoryStore
from ._delivery.transports import JsonLinesTransport, SegmentTransport, Transport
from ._events import ConversionTriggered, Event, RawRequest
from ._hosts import HostAllowList
from ._pages import PageRules
from ._preview import Previews
from ._proxies import ClientReport, IpMode, TrustedProxies, parse_networks, socket_client
from ._screening import bot_check
from ._seen import LocalSeen
from ._settings import (
    BotScreen,
    Budget,
    CacheControl,
    Consent,
    CspNonce,
    OnStoreError,
    Region,
    Settings,
    SplitUrl,
    from_environment,
)
from ._toml import read_toml

logger = logging.getLogger("optibase_edge")


class Optibase:
    """The configured experiments, and the queue that reports them to Segment.

    Build one per site at start-up (a bad setting raises :class:`ConfigError`
    naming the field) and mount it with ``app.add_middleware(OptibaseMiddleware,
    optibase=ob)``.

    ``secret_keys`` (newest last), ``segment_write_key``, ``segment_region`` and
    ``events_path`` fall back, when not given, to ``OPTIBASE_SECRET_KEYS``
    (comma-separated), ``OPTIBASE_SEGMENT_WRITE_KEY``, ``OPTIBASE_SEGMENT_REGION``
    and ``OPTIBASE_EVENTS_PATH``. With neither a secret key nor a write key it
    runs in development mode: an ephemeral cookie key, and events written as
    JSON lines to ``events_path``.

    ``transport`` replaces where batches go (by default Segment, or the
    JSON-lines file in development mode): any object with async
    ``send(batch) -> Outcome`` and ``aclose()``, such as :class:`MockTransport`.
    ``dedupe_store`` is where once-only events are claimed before sending:
    :class:`MemoryStore` by default, :class:`RedisStore` when processes or hosts
    share the site.

    ``on_store_error`` says what becomes of a once-only event whose claim
    fails (the store is down, or does not answer within ``request_timeout``).
    ``"send"`` (the default): it is sent unclaimed, and Segment's own
    ``messageId`` dedupe, deterministic for once-only events, is the second
    line; a copy may go out from each process that had one. ``"hold"``: it
    stays in the buffer (counting against ``max_buffer_events``; beyond that
    new events are refused as usual) and its claim is tried again, with
    backoff, until the store answers, then it is sent or deduped. What is
    still held at shutdown is spooled (with ``spool_path``; the process that
    takes the spool over sends it without a claim, as the failed claim may
    have landed) or counted failed. Other events never wait for the store, so
    under ``"hold"`` a visitor's plain conversion may go out before its held
    Identify; but nothing is taken back from the spool while the store fails.
    After a failure the store is left alone for a cooldown (0.1 s, doubling up
    to 2 s) in which the policy applies without asking it.
    """

    def __init__(
        self,
        tests: Sequence[Test] = Settings.tests,
        conversions: Sequence[Conversion] = Settings.conversions,
        *,
        secret_keys: Sequence[str] | str | None = None,
        segment_write_key: str | None = None,
        segment_region: Region | None = None,
        segment_endpoint: str | None = Settings.segment_endpoint,
        dedupe_store: DedupeStore | None = None,
        transport: Transport | None = None,
        events_path: str | os.PathLike[str] | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        cookie_name: str = Settings.cookie_name,
        cookie_max_age: int = Settings.cookie_max_age,
        cookie_secure: bool | None = Settings.cookie_secure,
        prefix: str = Settings.prefix,
        inject_script: bool | None = Settings.inject_script,
        csp_nonce: CspNonce | None = Settings.csp_nonce,
        dedupe_ttl: float = Settings.dedupe_ttl,
        on_store_error: OnStoreError = Settings.on_store_error,
        max_buffer_events: int = Settings.max_buffer_events,
        max_buffer_bytes: int = Settings.max_buffer_bytes,
        max_batch_events: int = Settings.max_batch_events,
        flush_interval: float = Settings.flush_interval,
        max_in_flight: int = Settings.max_in_flight,
        request_timeout: float = Settings.request_timeout,
        retry_max_time: float = Settings.retry_max_time,
        shutdown_timeout: float = Settings.shutdown_timeout,
        hosts: Sequence[str] = Settings.hosts,
        consent: Consent | None = Settings.consent,
        honor_gpc: bool = Settings.honor_gpc,
        preview_param: str | None = Settings.preview_param,
        split_url: SplitUrl = Settings.split_url,
        cache_control: CacheControl | None = Settings.cache_control,
        screen_bots: bool | BotScreen = Settings.screen_bots,
        trusted_proxies: Sequence[str] = Settings.trusted_proxies,
        ip: IpMode = Settings.ip,
        collector_visitor_budget: Budget | None = Settings.collector_visitor_budget,
        collector_ip_budget: Budget | None = Settings.collector_ip_budget,
    ) -> None:
        settings = Settings(
            tests=tuple(tests),
            conversions=tuple(conversions),
            **from_environment(
                os.environ,
                secret_keys=secret_keys,
                segment_write_key=segment_write_key,
                segment_region=segment_region,
                events_path=events_path,
            ),
            segment_endpoint=segment_endpoint,
            # A path or a Redis URL, as given: Settings conforms it.
            spool_path=cast(Path | None, spool_path),
            cookie_name=cookie_name,
            cookie_max_age=cookie_max_age,
            cookie_secure=cookie_secure,
            prefix=prefix,
            inject_script=inject_script,
            csp_nonce=csp_nonce,
            dedupe_ttl=dedupe_ttl,
            on_store_error=on_store_error,
            max_buffer_events=max_buffer_events,
            max_buffer_bytes=max_buffer_bytes,
            max_batch_events=max_batch_events,
            flush_interval=flush_interval,
            max_in_flight=max_in_flight,
            request_timeout=request_timeout,
            retry_max_time=retry_max_time,
            shutdown_timeout=shutdown_timeout,
            # Settings conforms it (a lone string is refused, not split into characters).
            hosts=cast(tuple[str, ...], hosts),
            consent=consent,
            honor_gpc=honor_gpc,
            preview_param=preview_param,
            split_url=split_url,
            cache_control=cache_control,
            screen_bots=screen_bots,
            trusted_proxies=cast(tuple[str, ...], trusted_proxies),
            ip=ip,
            collector_visitor_budget=collector_visitor_budget,
            collector_ip_budget=collector_ip_budget,
        )
        self._settings = settings
        if settings.development:
            logger.warning(
                "optibase: development mode: no secret key (visitor cookies will not survive a "
                "restart) and no Segment write key (events go to %s)",
                settings.events_path if transport is None else repr(transport),
            )
        if transport is None:
            if settings.segment_write_key:
                transport = SegmentTransport(
                    settings.segment_write_key,
                    base_url=settings.segment_base_url,
                    timeout=settings.request_timeout,
                )
            else:
                transport = JsonLinesTransport(settings.events_path)
        store = MemoryStore() if dedupe_store is None else dedupe_store
        self._delivery = Delivery(settings, transport, store)
        self._plans: dict[str, Plan] = {t.id: compile_test(t) for t in settings.tests}
        self._pages = PageRules(list(self._plans.values()), settings.conversions)
        self._codec = CookieCodec(settings.signing_keys)
        self._seen = LocalSeen()
        self._is_bot = bot_check(settings.screen_bots)
        self._cookie_name = settings.cookie_name.encode("latin-1")
        self._consent_log = RateLimitedLog(None)
        # What went wrong with a request a client sent: any client may send it again and again.
        self._request_log = RateLimitedLog(None)
        self._hosts = HostAllowList(settings.hosts) if settings.hosts else None
        self._proxies = (
            TrustedProxies(parse_networks(settings.trusted_proxies))
            if settings.trusted_proxies
            else None
        )
        # How an event reports its client, read in the sender; None: the socket's, in full.
        self._report = (
            None
            if self._proxies is None and settings.ip == "full"
            else ClientReport(self._proxies, settings.ip)
        )
        self._previews = (
            Previews(settings, settings.preview_param, self._plans, self._scheme)
            if settings.preview_param
            else None
        )
        self._schedule_boundaries = sorted(
            {when.timestamp() for t in settings.tests for when in (t.starts_at, t.ends_at) if when}
        )
        # {test_id: its variant ids} for the tests running in _running_epoch.
        self._running_epoch = -1
        self._running_now: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Optibase:
        """Build from an ``optibase.toml``: ``[[tests]]``, ``[[conversions]]`` and settings.

        *overrides* are keyword arguments of :class:`Optibase` that win over the
        file (objects TOML cannot hold, such as ``dedupe_store`` or ``transport``).
        """
        return cls(**{**read_toml(path), **overrides})

    @property
    def settings(self) -> Settings:
        """The validated settings (read-only)."""
        return self._settings

    async def convert(
        self,
        conversion_id: str,
        *,
        visitor_id: str | None = None,
        user_id: str | None = None,
        origin_url: str | None = None,
    ) -> None:
        """Record a conversion outside a request (webhooks, jobs).

        Needs a ``visitor_id`` (the anonymous ID from the cookie) and/or a
        ``user_id``. Raises ``ValueError`` for an unknown conversion id.
        """
        conversion = self._conversion(conversion_id)
        if not visitor_id and not user_id:
            raise ValueError("convert() needs a visitor_id or a user_id")
        self._emit_conversion(conversion, visitor_id, user_id, origin_url, (), None)

    def stats(self) -> dict[str, int]:
        """Delivery counters: accepted, sent, dropped, failed, deduped, pending, retried, ...

        ``accepted == sent + dropped + failed + deduped + pending`` at every moment.
        Of the dropped, ``deferred`` are once-only events refused by a full (or
        closed) buffer, not remembered as sent and so emitted again (a first-visit
        Identify or Experiment Viewed on the visitor's next request; each attempt
        is accepted anew), and ``beacons_dropped`` conversions posted to the
        collector while the buffer was half full (the other half is kept for
        page events).

        The dedupe store's health: ``store_errors`` counts claims that failed
        (each key of a failed call, each try); ``sent_unclaimed`` once-only
        events passed on without a claim (sent, unless Segment then refused
        them): under ``on_store_error="send"``, and under either policy those
        taken back from the spool whose claim failed; ``held`` the once-only
        events ``on_store_error="hold"`` keeps right now, waiting for the store
        (part of ``pending``).

        With ``spool_path`` set, an event that finds the buffer full is not
        dropped but ``overflowed``: appended to the spool (pending there) and
        taken back when there is room, its once-only key claimed then. Also
        ``spooled`` (left in the spool at shutdown), ``restored`` (taken back
        from it, by this process or the next) and ``spool_skipped`` (unreadable
        records there, skipped). An overflowed event the spool could not take
        counts ``failed``.
        """
        return self._delivery.stats()

    async def start(self) -> None:
        """Start background delivery (the middleware does this on lifespan startup)."""
        await self._delivery.start()

    async def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait up to *timeout* seconds for queued events to be delivered; True if all were."""
        return await self._delivery.flush(timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush within *timeout* (default ``shutdown_timeout``) and stop delivery."""
        await self._delivery.aclose(timeout)

    def __repr__(self) -> str:
        tests = ", ".join(self._plans)
        return f"<Optibase tests=[{tests}] development={self._settings.development}>"

    # -- for the visitor, the middleware and the endpoints ------------------------------

    def _running(self) -> Mapping[str, tuple[str, ...]]:
        """``{test_id: variant ids}`` of the tests running now.

        Rebuilt only when a scheduled test starts or ends: asking is a clock read
        at most (none without schedules), where checking each test's schedule
        would read it per test, on every page.
        """
        if not self._schedule_boundaries and self._running_epoch == 0:
            return self._running_now
        now = time.time()
        epoch = bisect_right(self._schedule_boundaries, now)
        if epoch != self._running_epoch:
            # The same instant decides the epoch and what runs in it.
            moment = datetime.fromtimestamp(now, UTC)
            self._running_now = {
                test_id: plan.variant_ids
                for test_id, plan in self._plans.items()
                if plan.test.is_running(moment)
            }
            self._running_epoch = epoch
        return self._running_now

    def _admits(self, scope: Mapping[str, Any], headers: Mapping[bytes, bytes]) -> bool:
        """The request may take part in tests: an allowed host, and the visitor's consent.

        Without it the visitor is outside every test, as a bot is, and their
        cookie is neither read nor written. A ``consent`` callable that fails
        counts as no consent: it is the safe side of a privacy decision.
        """
        if self._hosts is not None and not self._hosts.allows(headers.get(b"host")):
            return False
        settings = self._settings
        if settings.honor_gpc and headers.get(b"sec-gpc", b"").strip() == b"1":
            return False
        if settings.consent is not None:
            try:
                return settings.consent(scope) is True
            except Exception as exc:
                self._consent_log.warning(
                    "consent", f"optibase: consent callable failed ({exc!r}); treated as no consent"
                )
                return False
        return True

    def _client(
        self, scope: Mapping[str, Any], headers: Mapping[bytes, bytes]
    ) -> tuple[str | None, str]:
        """The client's ``(ip, scheme)``: the socket's, or as the trusted proxies forward them."""
        if self._proxies is None:
            return socket_client(scope)
        return self._proxies.client(scope, headers)

    def _scheme(self, scope: Mapping[str, Any]) -> str:
        if self._proxies is None:
            return cast(str, scope.get("scheme", "http"))
        return self._client(scope, dict(scope.get("headers", ())))[1]

    def _emit(self, event: Event, *, fresh_visitor: bool = False, beacon: bool = False) -> bool:
        """Queue *event* unless this process has already queued its once-only key.

        True when it is queued, now or before. False when delivery refused it (a
        full buffer, or a *beacon* beyond its share: see ``Delivery.submit``);
        then its once-only key is forgotten, and the caller must not record it as
        sent either (in the cookie), so that it is emitted again the next time it
        happens, as a first-visit event does on the visitor's next request.

        A visitor minted in this very request cannot have been seen before, so its
        events skip the local check (and do not fill the LRU).
        """
        if fresh_visitor:
            return self._delivery.submit(event, beacon=beacon)
        key = event.once_key
        if key is not None and not self._seen.first_time(key):
            return True
        if self._delivery.submit(event, beacon=beacon):
            return True
        if key is not None:
            self._seen.forget(key)
        return False

    def _emit_conversion(
        self,
        conversion: Conversion,
        visitor_id: str | None,
        user_id: str | None,
        origin_url: str | None,
        variants: tuple[tuple[str, str], ...],
        context: RawRequest | None,
        *,
        beacon: bool = False,
    ) -> None:
        self._emit(
            ConversionTriggered(
                visitor_id=visitor_id,
                user_id=user_id,
                timestamp=time.time(),
                conversion_id=conversion.id,
                conversion_type=conversion.type,
                origin_url=origin_url,
                variants=variants,
                one_per_visitor=conversion.one_per_visitor,
                nonce=os.urandom(16).hex(),
                context=context,
            ),
            beacon=beacon,
        )

    def _conversion(self, conversion_id: str) -> Conversion:
        conversion = self._settings.conversions_by_id.get(conversion_id)
        if conversion is None:
            raise ValueError(f"unknown conversion id {conversion_id!r}")
        return conversion

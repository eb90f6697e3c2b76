"""The :class:`Optibase` object and the per-request :class:`Visitor`."""

from __future__ import annotations

import logging
import os
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from fnmatch import translate
from typing import Any

from .assignment import Plan, choose, compile_test
from .config import Conversion, ConversionType, Settings, Test, build_settings, load_toml
from .dedupe import DedupeStore, LocalSeen, MemoryStore
from .delivery import Delivery, JsonlTransport, SegmentTransport, Transport
from .events import ConversionTriggered, Event, ExperimentViewed, Identify, RequestContext
from .screening import Audience, audience
from .visitor import CookieCodec, new_visitor_id

logger = logging.getLogger("optibase_edge")

_PATH_CACHE_SIZE = 4096


class Optibase:
    """The configured experiments, and the queue that reports them to Segment.

    Build one per site at start-up (a bad setting raises :class:`ConfigError`
    naming the field) and mount it with ``app.add_middleware(OptibaseMiddleware,
    optibase=ob)``. Settings not passed fall back to ``OPTIBASE_SECRET_KEYS``
    (comma-separated, newest last), ``OPTIBASE_SEGMENT_WRITE_KEY`` and
    ``OPTIBASE_SEGMENT_REGION``. With neither a write key nor a secret key it
    runs in development mode: an ephemeral key, and events written as JSON lines
    to ``events_path`` instead of Segment.
    """

    def __init__(
        self,
        tests: Sequence[Test] = (),
        conversions: Sequence[Conversion] = (),
        *,
        secret_keys: Sequence[str] | str | None = None,
        segment_write_key: str | None = None,
        segment_region: str | None = None,
        segment_endpoint: str | None = None,
        dedupe_store: DedupeStore | None = None,
        events_path: str | os.PathLike[str] | None = None,
        spool_path: str | os.PathLike[str] | None = None,
        csp_nonce: str | Callable[[Mapping[str, Any]], str | None] | None = None,
        **settings: Any,
    ) -> None:
        self.settings: Settings = build_settings(
            tests=tests,
            conversions=conversions,
            secret_keys=secret_keys,
            segment_write_key=segment_write_key,
            segment_region=segment_region,
            segment_endpoint=segment_endpoint,
            events_path=events_path,
            spool_path=spool_path,
            csp_nonce=csp_nonce,
            **settings,
        )
        s = self.settings
        if s.development:
            logger.warning(
                "optibase: development mode: no secret key (visitor cookies will not survive a "
                "restart) and no Segment write key (events go to %s)",
                s.events_path,
            )
        self.plans: dict[str, Plan] = {t.id: compile_test(t) for t in s.tests}
        self.codec = CookieCodec(s.secret_keys)
        self.seen = LocalSeen()
        transport: Transport = (
            SegmentTransport(s.segment_base_url, s.segment_write_key, s.request_timeout)
            if s.segment_write_key
            else JsonlTransport(s.events_path)
        )
        store = MemoryStore() if dedupe_store is None else dedupe_store
        self.delivery = Delivery(s, store, transport)
        self.cookie_name = s.cookie_name.encode("latin-1")
        self._schedule_boundaries = sorted(
            {when.timestamp() for t in s.tests for when in (t.starts_at, t.ends_at) if when}
        )
        self._test_pages = [(self.plans[t.id], _compile_globs(t.pages)) for t in s.tests if t.pages]
        self._conversion_pages = [
            (c, _compile_globs([c.url]))
            for c in s.conversions
            if c.type is ConversionType.PAGE_VIEW and c.url
        ]
        self._by_path: dict[str, tuple[tuple[Plan, ...], tuple[Conversion, ...]]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Optibase:
        """Build from an ``optibase.toml`` (``[[tests]]``, ``[[conversions]]``, settings)."""
        return cls(**{**load_toml(path), **overrides})

    # -- public API -------------------------------------------------------------------

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
        self.emit_conversion(conversion, visitor_id, user_id, origin_url, (), None)

    def stats(self) -> dict[str, int]:
        """Delivery counters: accepted, sent, dropped, failed, deduped, pending, retried, ...

        ``accepted == sent + dropped + failed + deduped + pending`` at every moment.
        """
        return self.delivery.stats()

    async def start(self) -> None:
        """Start background delivery (the middleware does this on lifespan startup)."""
        await self.delivery.start()

    async def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait up to *timeout* seconds for queued events to be delivered; True if all were."""
        return await self.delivery.flush(timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush within *timeout* (default ``shutdown_timeout``) and stop delivery."""
        await self.delivery.aclose(timeout)

    # -- used by the middleware and the collector -------------------------------------

    def for_path(self, path: str) -> tuple[tuple[Plan, ...], tuple[Conversion, ...]]:
        """The tests assigned on *path* and the PAGE_VIEW conversions it fires (cached)."""
        found = self._by_path.get(path)
        if found is None:
            plans = tuple(p for p, rx in self._test_pages if _matches(rx, path))
            conversions = tuple(c for c, rx in self._conversion_pages if _matches(rx, path))
            found = (plans, conversions)
            if len(self._by_path) >= _PATH_CACHE_SIZE:
                self._by_path.clear()  # paths come from clients: keep the cache bounded
            self._by_path[path] = found
        return found

    def is_running(self, test: Test) -> bool:
        if test.status != "running":
            return False
        if not self._schedule_boundaries:
            return True
        return test.is_running(datetime.now().astimezone())

    def schedule_epoch(self) -> int:
        """A number that changes whenever a scheduled test starts or ends.

        What is derived from which tests are running can be cached under it.
        """
        if not self._schedule_boundaries:
            return 0
        return bisect_right(self._schedule_boundaries, time.time())

    def emit(self, event: Event, *, fresh_visitor: bool = False) -> None:
        """Queue *event* unless this process has already queued its once-only key.

        A visitor minted in this very request cannot have been seen before, so its
        events skip the local check (and do not fill the LRU).
        """
        key = event.once_key
        if key is not None and not fresh_visitor and not self.seen.first_time(key):
            return
        self.delivery.submit(event)

    def emit_conversion(
        self,
        conversion: Conversion,
        visitor_id: str | None,
        user_id: str | None,
        origin_url: str | None,
        variants: tuple[tuple[str, str], ...],
        context: RequestContext | None,
    ) -> None:
        self.emit(
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
            )
        )

    def _conversion(self, conversion_id: str) -> Conversion:
        conversion = self.settings.conversions_by_id.get(conversion_id)
        if conversion is None:
            raise ValueError(f"unknown conversion id {conversion_id!r}")
        return conversion


class Visitor:
    """The visitor of the current request: ``get_visitor(request)`` returns it.

    Loaded lazily: a request that never asks for the visitor costs nothing.
    Bots and prefetches are told apart only when something new would happen
    (a first visit, a new assignment, a conversion): they record nothing and
    their cookie is not written, and bots are outside every test.
    """

    __slots__ = (
        "_assignments",
        "_audience",
        "_changed",
        "_context",
        "_headers",
        "_id",
        "_optibase",
        "_owned",
        "_scope",
        "_token",
        "_user_id",
        "is_new",
    )

    def __init__(self, optibase: Optibase, scope: Mapping[str, Any], token: str | None) -> None:
        self._optibase = optibase
        self._scope = scope
        self._token = token
        self._id: str | None = None
        self._assignments: Mapping[str, str] = {}
        self._owned = False  # until the first change, assignments are the cached record's
        self._changed = False
        self._context: RequestContext | None = None
        self._headers: dict[bytes, bytes] | None = None
        self._user_id: str | None = None
        self._audience: Audience | None = None
        self.is_new = False

    @property
    def id(self) -> str:
        """The anonymous visitor ID (a UUID4 string)."""
        if self._id is None:
            self._load()
            assert self._id is not None
        return self._id

    @property
    def user_id(self) -> str | None:
        """Your own user ID, once :meth:`identify` attached one in this request."""
        return self._user_id

    def variant(self, test_id: str) -> str | None:
        """The variant this visitor sees in *test_id*, assigning it on first use.

        None when the test is unknown, not running, or the visitor is outside its
        traffic share (bots are outside every test). A stopped test with a winner
        shows the winner to everyone.
        """
        plan = self._optibase.plans.get(test_id)
        if plan is None:
            return None
        return self._variant(plan)

    @property
    def active_variants(self) -> dict[str, str]:
        """Every running test this visitor is in: ``{test_id: variant_id}``."""
        if self._id is None:
            self._load()
        plans = self._optibase.plans
        return {
            test_id: variant_id
            for test_id, variant_id in self._assignments.items()
            if (plan := plans.get(test_id)) is not None
            and variant_id in plan.variant_ids
            and self._optibase.is_running(plan.test)
        }

    async def convert(self, conversion_id: str, *, origin_url: str | None = None) -> None:
        """Record a conversion for this visitor.

        ``origin_url`` is the page it happened on; by default the URL of this
        request (pass the form's page when this request is the form's POST).
        Raises ``ValueError`` for an unknown conversion id.
        """
        conversion = self._optibase._conversion(conversion_id)
        self.fire(conversion, origin_url)

    def identify(self, user_id: str, traits: Mapping[str, Any] | None = None) -> None:
        """Attach your own user ID (and traits) to this visitor: one Identify per pair."""
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        self._user_id = user_id
        if self._quiet():
            return
        self._optibase.emit(
            Identify(self.id, user_id, time.time(), dict(traits) if traits else None, self.context)
        )

    # -- used by the middleware and the collector -------------------------------------

    @property
    def context(self) -> RequestContext:
        if self._context is None:
            self._context = request_context(self._scope, self._header_map())
        return self._context

    @property
    def changed(self) -> bool:
        """The cookie must be (re)written on this response."""
        return self._changed and not self._quiet()

    @property
    def unchanged_token(self) -> str | None:
        """The request's cookie, when it already says all there is about this visitor."""
        if self._id is None or self._changed or self._audience not in (None, "visitor"):
            return None
        return self._token

    def assign_page(self, plans: tuple[Plan, ...]) -> None:
        if self._id is None:
            self._load()
        assignments = self._assignments
        for plan in plans:
            # The common case, a returning visitor already in the test, costs two lookups.
            stored = assignments.get(plan.test.id)
            if stored is None or stored not in plan.variant_ids:
                self._variant(plan)

    def fire(
        self,
        conversion: Conversion,
        origin_url: str | None = None,
        context: RequestContext | None = None,
    ) -> None:
        if self._quiet():
            return
        context = context or self.context
        self._optibase.emit_conversion(
            conversion,
            self.id,
            self._user_id,
            origin_url or context.url,
            tuple(self.active_variants.items()),
            context,
        )

    def cookie_token(self) -> str | None:
        """A freshly signed token when the cookie must change, else None."""
        if not self._changed or self._id is None or self._quiet():
            return None
        tests = self._optibase.plans
        kept = {t: v for t, v in self._assignments.items() if t in tests}
        return self._optibase.codec.encode(self._id, kept)

    def _load(self) -> None:
        optibase = self._optibase
        record = optibase.codec.decode(self._token) if self._token else None
        if record is not None:
            self._id = record.visitor_id
            self._assignments = record.assignments
            self._changed = record.stale
            return
        self._id = new_visitor_id()
        self._assignments = {}
        self._changed = True
        self.is_new = True
        if not self._quiet():
            optibase.emit(
                Identify(self._id, None, time.time(), None, self.context), fresh_visitor=True
            )

    def _variant(self, plan: Plan) -> str | None:
        test = plan.test
        if not self._optibase.is_running(test):
            return test.winner if test.status == "stopped" else None
        visitor_id = self.id
        stored = self._assignments.get(test.id)
        if stored is not None and stored in plan.variant_ids:
            return stored
        if self._screen() == "bot":
            return None
        chosen = choose(plan, visitor_id)
        if chosen is None:
            return None
        if not self._owned:
            self._assignments = dict(self._assignments)
            self._owned = True
        self._assignments[test.id] = chosen  # type: ignore[index]
        self._changed = True
        if self._quiet():
            return chosen  # a prefetch renders the variant; the real view records it
        variant = test.variant_by_id(chosen)
        self._optibase.emit(
            ExperimentViewed(
                visitor_id,
                self._user_id,
                time.time(),
                test.id,
                chosen,
                test.name,
                variant.name if variant else None,
                self.context,
            ),
            fresh_visitor=self.is_new,
        )
        return chosen

    def _screen(self) -> Audience:
        if self._audience is None:
            self._audience = audience(self._header_map())
        return self._audience

    def _header_map(self) -> dict[bytes, bytes]:
        if self._headers is None:
            self._headers = dict(self._scope.get("headers", ()))
        return self._headers

    def _quiet(self) -> bool:
        return self._screen() != "visitor"


def request_context(
    scope: Mapping[str, Any], headers: Mapping[bytes, bytes] | None = None
) -> RequestContext:
    """Raw request facts for an event, read from an ASGI HTTP scope.

    *headers* is the scope's headers as a dict, when the caller has built it already.
    """
    # One dict built in C beats comparing every header in Python (ASGI names are lower case).
    get = (dict(scope.get("headers", ())) if headers is None else headers).get
    ua, lang = _text(get(b"user-agent")), _text(get(b"accept-language"))
    referrer, host = _text(get(b"referer")), _text(get(b"host"))
    client = scope.get("client")
    if host is None and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}" if port else server_host
    url = None
    if host:
        # ASGI servers (and Starlette) put root_path inside path; older ones did not.
        path, root_path = scope.get("path", ""), scope.get("root_path", "")
        if root_path and not path.startswith(root_path):
            path = root_path + path
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")
    return RequestContext(
        ip=client[0] if client else None,
        user_agent=ua,
        accept_language=lang,
        url=url,
        referrer=referrer,
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _compile_globs(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{translate(_trim(p))})" for p in patterns))


def _trim(path: str) -> str:
    return path.rstrip("/") or "/"


def _matches(pattern: re.Pattern[str], path: str) -> bool:
    return pattern.match(_trim(path)) is not None

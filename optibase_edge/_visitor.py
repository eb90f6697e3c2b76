"""The :class:`Visitor` of one request: who it is, what it sees, what it converts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._assignment import Plan, choose
from ._config import Conversion
from ._cookie import VisitorRecord, cookie_values, new_visitor_id
from ._events import ExperimentViewed, Identify, RawRequest, raw_request
from ._preview import NOTHING_FORCED
from ._screening import Audience, audience

if TYPE_CHECKING:
    from ._optibase import Optibase

_OUTSIDE_TESTS = frozenset({"bot", "outside"})


class Visitor:
    """The visitor of the current request: ``get_visitor(request)`` returns it.

    Loaded lazily: a request that never asks for the visitor costs nothing.
    Bots and prefetches are told apart only when something new would happen
    (a first visit, a new assignment, a conversion): they record nothing and
    their cookie is not written, and bots are outside every test.

    On a host not in ``hosts``, or without consent, the visitor is outside
    every running test and records nothing; their cookie is neither read nor
    written, so ``id`` is a fresh ID on each request. A preview shows its
    forced variants and records nothing either.

    A first-visit event the delivery buffer has no room for is shown but not
    recorded: an Experiment Viewed leaves its assignment out of the cookie, a
    new visitor's Identify leaves a mark in it, and the next request (which
    assigns the same variant, as assignment is a function of the ID) emits it
    again.
    """

    __slots__ = (
        "_assignments",
        "_audience",
        "_changed",
        "_context",
        "_forced",
        "_headers",
        "_id",
        "_identify_owed",
        "_is_new",
        "_may_mint",
        "_optibase",
        "_owned",
        "_path",
        "_scope",
        "_token",
        "_unrecorded",
        "_user_id",
    )

    def __init__(
        self,
        optibase: Optibase,
        scope: Mapping[str, Any],
        token: str | None,
        forced: Mapping[str, str] = NOTHING_FORCED,
        *,
        may_mint: bool = True,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        self._optibase = optibase
        self._may_mint = may_mint  # False: without a valid cookie, a stranger (no ID is made)
        self._forced = forced
        self._scope = scope
        # The path as asked for: a router in the app may rewrite these in this same
        # scope (Starlette's Mount extends root_path) before an event or the tag is made.
        self._path = scope.get("path", ""), scope.get("root_path", "")
        self._token = token
        self._id: str | None = None
        self._assignments: Mapping[str, str] = {}
        self._owned = False  # until the first change, assignments are the cached record's
        self._changed = False
        self._context: RawRequest | None = None
        self._headers = headers  # the scope's, as a map, when the caller built it already
        self._user_id: str | None = None
        self._audience: Audience | None = None
        self._is_new = False
        self._identify_owed = False  # the first Identify is not queued yet
        self._unrecorded: tuple[str, ...] = ()  # tests whose exposure is not queued yet

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
        traffic share (bots, other hosts and visitors without consent are outside
        every test). A stopped test with a winner shows the winner to everyone; a
        preview shows its forced variant, whatever the test's status.
        """
        plan = self._optibase._plans.get(test_id)
        if plan is None:
            return None
        return self._variant(plan)

    @property
    def active_variants(self) -> dict[str, str]:
        """Every running test this visitor is in: ``{test_id: variant_id}``."""
        if self._id is None:
            self._load()
        running = self._optibase._running()
        active = {
            test_id: variant_id
            for test_id, variant_id in self._assignments.items()
            if variant_id in running.get(test_id, ())
        }
        if self._forced:
            active.update(self._forced)
        return active

    async def convert(self, conversion_id: str, *, origin_url: str | None = None) -> None:
        """Record a conversion for this visitor.

        ``origin_url`` is the page it happened on; by default the URL of this
        request (pass the form's page when this request is the form's POST).
        Raises ``ValueError`` for an unknown conversion id.
        """
        self._fire(self._optibase._conversion(conversion_id), origin_url)

    def identify(self, user_id: str, traits: Mapping[str, Any] | None = None) -> None:
        """Attach your own user ID (and traits) to this visitor: one Identify per pair."""
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        self._user_id = user_id
        if self._quiet():
            return
        self._optibase._emit(
            Identify(
                self.id,
                user_id,
                time.time(),
                dict(traits) if traits else None,
                self._request_context(),
            )
        )

    # -- for the middleware and the endpoints -----------------------------------------

    def _request_context(self) -> RawRequest:
        if self._context is None:
            path, root_path = self._path
            self._context = raw_request(
                self._scope, self._header_map(), path, root_path, self._optibase._report
            )
        return self._context

    def _assign_page(self, plans: tuple[Plan, ...]) -> None:
        if self._id is None:
            self._load()
        assignments = self._assignments
        for plan in plans:
            # The common case, a returning visitor already in the test, costs two lookups.
            stored = assignments.get(plan.test.id)
            if stored is None or stored not in plan.variant_ids:
                self._variant(plan)

    def _fire(
        self,
        conversion: Conversion,
        origin_url: str | None = None,
        context: RawRequest | None = None,
        *,
        beacon: bool = False,
    ) -> None:
        """Emit *conversion*; a *beacon* (posted to the collector) only within its share.

        Without *origin_url*, the event's is its request's URL, read in the sender.
        """
        if self._quiet():
            return
        self._optibase._emit_conversion(
            conversion,
            self.id,
            self._user_id,
            origin_url or None,
            tuple(self.active_variants.items()),
            context or self._request_context(),
            beacon=beacon,
        )

    def _cookie_token(self) -> str | None:
        """A freshly signed token when the cookie must change, else None."""
        if not self._changed or self._id is None or self._quiet():
            return None
        assignments = self._assignments
        unrecorded = self._unrecorded
        if unrecorded or not self._is_new:
            # A cookie's tests may have left the configuration since it was written.
            plans = self._optibase._plans
            assignments = {
                t: v for t, v in assignments.items() if t in plans and t not in unrecorded
            }
        # else a new visitor's assignments were all made by this request's plans.
        return self._optibase._codec.encode(self._id, assignments, self._identify_owed)

    def _load(self) -> None:
        optibase = self._optibase
        if not optibase._admits(self._scope, self._header_map()):
            self._id = new_visitor_id()
            self._assignments = {}
            self._audience = "preview" if self._forced else "outside"
            return
        record = optibase._codec.decode(self._token) if self._token else None
        if record is None and self._token is not None:
            record = self._other_cookie(optibase)
        if record is not None:
            self._id = record.visitor_id
            self._assignments = record.assignments
            self._changed = record.stale
            if record.identify_owed:
                self._identify_owed = True
                self._identify_first_visit()
            return
        self._id = new_visitor_id()
        self._assignments = {}
        if not self._may_mint:
            self._audience = "preview" if self._forced else "stranger"
            return
        self._changed = True
        self._is_new = True
        self._identify_owed = True
        self._identify_first_visit()

    def _identify_first_visit(self) -> None:
        """Emit the visitor's first Identify; once it is queued, nothing more is owed."""
        if self._quiet():
            return
        identify = Identify(self.id, None, time.time(), None, self._request_context())
        if self._optibase._emit(identify, fresh_visitor=self._is_new):
            self._identify_owed = False
            self._changed = True  # a returning visitor's cookie loses its mark

    def _other_cookie(self, optibase: Optibase) -> VisitorRecord | None:
        """A valid record in a later cookie of our name, when the first was not one."""
        for token in cookie_values(self._scope["headers"], optibase._cookie_name)[1:]:
            record = optibase._codec.decode(token)
            if record is not None:
                self._token = token
                return record
        return None

    def _variant(self, plan: Plan, *, may_assign: bool = True) -> str | None:
        """The visitor's variant in *plan*'s test; unless *may_assign*, only one already made."""
        test = plan.test
        if self._forced and test.id in self._forced:
            return self._forced[test.id]
        optibase = self._optibase
        if test.id not in optibase._running():
            return test.shown_to_all
        visitor_id = self.id
        stored = self._assignments.get(test.id)
        if stored is not None and stored in plan.variant_ids:
            return stored
        if not may_assign or self._screen() in _OUTSIDE_TESTS:
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
        # While the Identify is owed, so is the exposure: Identify goes first.
        if self._identify_owed or not optibase._emit(
            ExperimentViewed(
                visitor_id,
                self._user_id,
                time.time(),
                test.id,
                chosen,
                test.name,
                variant.name if variant else None,
                self._request_context(),
            ),
            fresh_visitor=self._is_new,
        ):
            self._unrecorded += (test.id,)
        return chosen

    def _screen(self) -> Audience:
        if self._id is None:
            self._load()  # a visitor outside the tests is known as such once loaded
        if self._audience is None:
            if self._forced:
                self._audience = "preview"
            else:
                self._audience = audience(self._header_map(), self._optibase._is_bot)
        return self._audience

    def _header_map(self) -> dict[bytes, bytes]:
        if self._headers is None:
            self._headers = dict(self._scope.get("headers", ()))
        return self._headers

    def _quiet(self) -> bool:
        return self._screen() != "visitor"

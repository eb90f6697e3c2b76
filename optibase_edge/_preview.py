"""Previews: a tester sees chosen variants, and nothing about the visit is recorded.

``?optibase_preview=hero:bold,cta:green`` forces those variants for this
request and, through a session cookie, for the rest of the tester's visit;
``?optibase_preview=off`` ends it. Tests or variants that do not exist are
ignored (a stale QA link must not become an error page); a parameter that names
none leaves things as they were. The visitor's own cookie and sticky
assignments are never touched: a previewing visitor is quiet, like a prefetch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from ._assignment import Plan
from ._cookie import cookie_in, is_secure, read_cookie, set_cookie_header
from ._settings import Settings

# A QA link names a few tests; anything longer is not one.
_MAX_VALUE_LENGTH = 1024
NOTHING_FORCED: Mapping[str, str] = MappingProxyType({})
"""No preview: the forced variants of every request outside one (shared, so read-only)."""

Header = tuple[bytes, bytes]
SchemeOf = Callable[[Mapping[str, Any]], str]  # the request's scheme, as the visitor used it


class Previews:
    """Reads the preview parameter and cookie of a request."""

    def __init__(
        self, settings: Settings, param: str, plans: Mapping[str, Plan], scheme: SchemeOf
    ) -> None:
        self._param = param
        # Checked first on every request: a plain substring test is all most requests need.
        self._param_marker = param.encode("ascii") + b"="
        self._cookie_name = f"{settings.cookie_name}_preview"
        self._cookie_marker = self._cookie_name.encode("ascii")
        self._cookie_secure = settings.cookie_secure
        self._plans = plans
        self._scheme = scheme

    def read(
        self, scope: Mapping[str, Any], cookie: bytes | None = None
    ) -> tuple[Mapping[str, str], Header | None]:
        """The variants forced for this request, and a Set-Cookie header to send, if any.

        *cookie*: the value of the request's only ``Cookie`` header, when the
        caller has it (``b""`` for none); else the headers are scanned.
        """
        query: bytes = scope.get("query_string", b"")
        if self._param_marker in query:
            value = self._param_value(query)
            if value is not None:
                if value.strip().lower() == "off":
                    return NOTHING_FORCED, self._cookie_header(scope, "", max_age=0)
                forced = self.parse(value)
                if forced:
                    # A session cookie: the preview ends with the browser session.
                    return forced, self._cookie_header(scope, _encode(forced), max_age=None)
        return self.from_cookie(scope, cookie), None

    def from_cookie(
        self, scope: Mapping[str, Any], cookie: bytes | None = None
    ) -> Mapping[str, str]:
        """The variants a preview cookie forces (none without one); *cookie* as for :meth:`read`."""
        marker = self._cookie_marker
        if cookie is not None:
            if marker not in cookie:
                return NOTHING_FORCED
            raw = cookie_in(cookie, marker)
            return self.parse(unquote(raw)) if raw else NOTHING_FORCED
        headers = scope.get("headers", ())
        # Every request asks; a plain loop over the headers is what it can afford.
        for key, value in headers:
            if key == b"cookie" and marker in value:
                raw = read_cookie(headers, marker)
                return self.parse(unquote(raw)) if raw else NOTHING_FORCED
        return NOTHING_FORCED

    def parse(self, value: str) -> Mapping[str, str]:
        """``test:variant[,test:variant]`` as {test_id: variant_id}, unknown pairs ignored."""
        if len(value) > _MAX_VALUE_LENGTH:
            return NOTHING_FORCED
        forced: dict[str, str] = {}
        for pair in value.split(","):
            test_id, _, variant_id = pair.partition(":")
            plan = self._plans.get(test_id.strip())
            if plan is not None and variant_id.strip() in plan.variant_ids:
                forced[plan.test.id] = variant_id.strip()
        return forced

    def _param_value(self, query: bytes) -> str | None:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == self._param:
                return value
        return None

    def _cookie_header(self, scope: Mapping[str, Any], value: str, max_age: int | None) -> Header:
        secure = is_secure(self._cookie_secure, self._scheme(scope))
        return set_cookie_header(self._cookie_name, value, max_age=max_age, secure=secure)


def _encode(forced: Mapping[str, str]) -> str:
    # Percent-encoded: a comma may not appear in a cookie value.
    return quote(",".join(f"{t}:{v}" for t, v in forced.items()), safe="")

"""The three things that happen to a visitor, as small immutable records.

Records are made on the request path, so they only capture raw values (and
:func:`request_context` only copies what the ASGI scope holds); turning them
into Segment JSON (parsing URLs, formatting times) happens in the background,
in :mod:`optibase_edge._segment`. They are named tuples rather than
frozen dataclasses: as immutable, and three times cheaper to make.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ._config import ConversionType
from ._proxies import socket_client


class RequestContext(NamedTuple):
    """Raw facts about the request an event came from."""

    ip: str | None = None
    user_agent: str | None = None
    accept_language: str | None = None
    url: str | None = None
    referrer: str | None = None


class Identify(NamedTuple):
    visitor_id: str | None
    user_id: str | None
    timestamp: float
    traits: Mapping[str, Any] | None = None
    context: RequestContext | None = None

    @property
    def once_key(self) -> str:
        if self.user_id is None:
            return f"identify\x1f{self.visitor_id}"
        return f"identify\x1f{self.visitor_id}\x1f{self.user_id}"


class ExperimentViewed(NamedTuple):
    visitor_id: str
    user_id: str | None
    timestamp: float
    test_id: str
    variant_id: str
    test_name: str | None = None
    variant_name: str | None = None
    context: RequestContext | None = None

    @property
    def once_key(self) -> str:
        return f"exposure\x1f{self.visitor_id}\x1f{self.test_id}"


class ConversionTriggered(NamedTuple):
    visitor_id: str | None
    user_id: str | None
    timestamp: float
    conversion_id: str
    conversion_type: ConversionType
    origin_url: str | None
    variants: tuple[tuple[str, str], ...]
    one_per_visitor: bool
    nonce: str
    context: RequestContext | None = None

    @property
    def once_key(self) -> str | None:
        if not self.one_per_visitor:
            return None
        who = f"v\x1f{self.visitor_id}" if self.visitor_id else f"u\x1f{self.user_id}"
        return f"conversion\x1f{who}\x1f{self.conversion_id}"


Event = Identify | ExperimentViewed | ConversionTriggered


def request_context(
    scope: Mapping[str, Any],
    headers: Mapping[bytes, bytes] | None = None,
    client: tuple[str | None, str] | None = None,
) -> RequestContext:
    """Raw request facts for an event, read from an ASGI HTTP scope.

    *headers* is the scope's headers as a dict, when the caller has built it
    already; *client* the ``(ip, scheme)`` to report instead of the socket's.
    """
    # One dict built in C beats comparing every header in Python (ASGI names are lower case).
    get = (dict(scope.get("headers", ())) if headers is None else headers).get
    ip, scheme = socket_client(scope) if client is None else client
    ua, lang = _text(get(b"user-agent")), _text(get(b"accept-language"))
    referrer, host = _text(get(b"referer")), _text(get(b"host"))
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
        url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    return RequestContext(
        ip=ip,
        user_agent=ua,
        accept_language=lang,
        url=url,
        referrer=referrer,
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")

"""The three things that happen to a visitor, as small immutable records.

Records are made on the request path, so they only capture raw values: the
request they came from is a :class:`RawRequest`, references to what the ASGI
scope holds, read into a :class:`RequestContext` (headers decoded, the URL
built, the client's address read through trusted proxies) by the background
sender, in :mod:`optibase_edge._segment`, as is everything else that makes
Segment JSON (parsing URLs, formatting times). They are named tuples rather
than frozen dataclasses: as immutable, and three times cheaper to make.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ._config import ConversionType
from ._proxies import ClientReport, socket_client


class RequestContext(NamedTuple):
    """Raw facts about the request an event came from."""

    ip: str | None = None
    user_agent: str | None = None
    accept_language: str | None = None
    url: str | None = None
    referrer: str | None = None


class RawRequest(NamedTuple):
    """The request an event came from, as the ASGI scope held it: read later, off the request path.

    Making one costs a tuple (about 0.4 µs), where reading the request into a
    :class:`RequestContext` costs four times that. *headers* is the scope's
    headers as a dict, which the visitor has built already and never changes;
    *report* reads the client's address and scheme (through trusted proxies, as
    ``ip`` says to report it), None for the socket's, in full; *page*, when set,
    is the page and referrer to report instead of the request's (a beacon's
    request is not its page's).
    """

    headers: Mapping[bytes, bytes]
    client: tuple[str, int] | None
    scheme: str
    server: tuple[str, int | None] | None
    path: str
    root_path: str
    query_string: bytes
    report: ClientReport | None = None
    page: tuple[str, str | None] | None = None

    def parsed(self) -> RequestContext:
        """The facts an event records about this request."""
        scope = {
            "client": self.client,
            "scheme": self.scheme,
            "server": self.server,
            "path": self.path,
            "root_path": self.root_path,
            "query_string": self.query_string,
        }
        client = None if self.report is None else self.report(scope, self.headers)
        context = request_context(scope, self.headers, client)
        if self.page is not None:
            url, referrer = self.page
            context = context._replace(url=url, referrer=referrer)
        return context


def raw_request(
    scope: Mapping[str, Any],
    headers: Mapping[bytes, bytes],
    path: str,
    root_path: str,
    report: ClientReport | None,
) -> RawRequest:
    """What an event keeps of *scope*: its *path* and *root_path* as the request came in."""
    return RawRequest(
        headers,
        scope.get("client"),
        scope.get("scheme", "http"),
        scope.get("server"),
        path,
        root_path,
        scope.get("query_string", b""),
        report,
    )


class Identify(NamedTuple):
    visitor_id: str | None
    user_id: str | None
    timestamp: float
    traits: Mapping[str, Any] | None = None
    context: RequestContext | RawRequest | None = None

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
    context: RequestContext | RawRequest | None = None

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
    context: RequestContext | RawRequest | None = None

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

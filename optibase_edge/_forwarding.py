"""What a reverse proxy changes in the headers it passes on, either way (pure).

Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection, not the message:
they stop at the proxy, with every field the ``Connection`` header names. The
rest of a request goes up with the client's forwarding facts added; the rest
of a response comes down with the upstream's own address taken out of
``Location`` and cookie ``Domain`` attributes, so the client stays on the edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._codings import DECODABLE

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set anew for the upstream, whatever the client sent.
_REPLACED_UP = frozenset(
    {b"host", b"accept-encoding", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)
# The edge's server writes its own: the upstream's would make a second of each.
_REPLACED_DOWN = frozenset({b"date", b"server"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Upstream:
    """The origin a proxy forwards to: ``scheme://host:port`` and a path *prefix*.

    *prefix* is ``""`` or a path without a trailing slash (``/app``), put before
    every path sent up.
    """

    url: str
    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """*url* as an upstream; ValueError naming ``upstream_url`` when it cannot be one."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"upstream_url {url!r} is not a URL: {exc}") from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"upstream_url {url!r} must be an http:// or https:// URL with a host")
        if "?" in url or "#" in url:
            raise ValueError(f"upstream_url {url!r} must have no query and no fragment")
        if parts.username is not None:
            # The client's own Authorization must reach the upstream, not be replaced.
            raise ValueError(f"upstream_url {url!r} must carry no credentials")
        prefix = parts.path.rstrip("/")
        return cls(url, parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme], prefix)

    def location(self, value: bytes, edge_origin: bytes | None) -> bytes:
        """A ``Location`` *value* with the upstream's origin and prefix replaced by the edge's.

        Only an absolute URL at the upstream's scheme, host and port, with a path
        under the prefix, is rewritten: to *edge_origin* (``scheme://host`` as the
        client saw the edge), or to the bare path and query when that is unknown.
        Anything else (a relative reference, another site) is the upstream's to say.
        """
        scheme, sep, rest = value.partition(b"://")
        if not sep:
            return value
        end = len(rest)
        for stop in (b"/", b"?", b"#"):
            found = rest.find(stop)
            if found != -1:
                end = min(end, found)
        authority, target = rest[:end], rest[end:]
        if not self._is_origin(scheme, authority):
            return value
        prefix = self.prefix.encode()
        if not target.startswith(prefix):
            return value
        target = target[len(prefix) :]
        if target[:1] not in (b"", b"/", b"?", b"#"):
            return value  # "/application" is not under "/app"
        if not target.startswith(b"/"):
            target = b"/" + target
        return target if edge_origin is None else edge_origin + target

    def _is_origin(self, scheme: bytes, authority: bytes) -> bool:
        name = scheme.decode("latin-1").lower()
        if name != self.scheme or b"@" in authority:
            return False
        try:
            parts = urlsplit("//" + authority.decode("latin-1"))
            port = parts.port or _DEFAULT_PORTS[name]
        except ValueError:
            return False
        return parts.hostname == self.host and port == self.port

    def cookie(self, value: bytes) -> bytes:
        """A ``Set-Cookie`` *value* without a ``Domain`` naming the upstream or a parent of it.

        Without one the browser binds the cookie to the host it asked: the edge.
        Every other attribute is kept byte for byte, as is a Domain naming any
        other site.
        """
        parts = value.split(b";")
        kept = [parts[0]]
        kept.extend(part for part in parts[1:] if not self._names_upstream(part))
        return value if len(kept) == len(parts) else b";".join(kept)

    def _names_upstream(self, attribute: bytes) -> bool:
        name, _, domain = attribute.partition(b"=")
        if name.strip().lower() != b"domain":
            return False
        domain_name = domain.strip().lstrip(b".").lower().decode("latin-1")
        return bool(domain_name) and (
            self.host == domain_name or self.host.endswith("." + domain_name)
        )

    def response_headers(
        self, headers: Iterable[tuple[bytes, bytes]], edge_origin: bytes | None
    ) -> Headers:
        """The upstream's response *headers* as the client gets them, names lower-cased.

        Hop-by-hop fields go, and ``Date`` and ``Server`` (the edge's server
        sends its own); ``Location`` and each ``Set-Cookie`` (kept apart) are
        rewritten as :meth:`location` and :meth:`cookie` say.
        """
        headers = [(name.lower(), value) for name, value in headers]
        dropped = HOP_BY_HOP | _connection_named(headers) | _REPLACED_DOWN
        out: Headers = []
        for name, value in headers:
            if name in dropped:
                continue
            if name == b"location":
                value = self.location(value, edge_origin)
            elif name == b"set-cookie":
                value = self.cookie(value)
            out.append((name, value))
        return out


def request_headers(
    headers: Iterable[tuple[bytes, bytes]], client_ip: str | None, scheme: str
) -> Headers:
    """The client's request *headers* (ASGI: lower-cased names) as the upstream gets them.

    Hop-by-hop fields go, and ``Host``: the upstream's own is sent. The client's
    address is appended to ``X-Forwarded-For``; ``X-Forwarded-Proto`` is
    *scheme* and ``X-Forwarded-Host`` the client's ``Host``; ``Accept-Encoding``
    is :func:`accept_encoding` of the client's.
    """
    headers = list(headers)
    hop_by_hop = HOP_BY_HOP | _connection_named(headers)
    out: Headers = []
    forwarded_for: list[bytes] = []
    accepted: list[bytes] = []
    host = None
    for name, value in headers:
        if name in hop_by_hop:
            continue
        if name not in _REPLACED_UP:
            out.append((name, value))
        elif name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name == b"accept-encoding":
            accepted.append(value)
        elif name == b"host":
            host = value
    if client_ip is not None:
        forwarded_for.append(client_ip.encode())
    if forwarded_for:
        out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    out.append((b"x-forwarded-proto", scheme.encode()))
    if host is not None:
        out.append((b"x-forwarded-host", host))
    out.append((b"accept-encoding", accept_encoding(b", ".join(accepted))))
    return out


def accept_encoding(value: bytes) -> bytes:
    """The codings of an ``Accept-Encoding`` *value* that are :data:`DECODABLE`.

    Each kept in the client's order with its own parameters (``br;q=0.9``);
    ``identity`` when none is left, so the upstream does not pick one itself.
    """
    kept = [
        item.strip()
        for item in value.split(b",")
        if item.partition(b";")[0].strip().lower().decode("latin-1") in DECODABLE
    ]
    return b", ".join(kept) if kept else b"identity"


def _connection_named(headers: Headers) -> frozenset[bytes]:
    """The field names listed in the ``Connection`` headers of *headers*."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    )

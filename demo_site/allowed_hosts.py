"""The ``Host`` names a local server answers to: loopback ones and those it is told.

A page on ``evil.example`` can re-point its own DNS name at 127.0.0.1 (DNS
rebinding) and read the answers as same-origin, since the browser only sees
its own name. Its requests still say ``Host: evil.example``, so a server that
answers only names it knows cannot be read that way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from demo_site.json_responses import RequestError, error_response

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
_HOST_HEADER: Final = re.compile(r"(?P<name>\[[^\]]+\]|[^:\[\]]+)(?::[0-9]*)?")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other name may resolve to anything
        return False


def exposure_warning(host: str) -> str | None:
    """What to tell whoever makes the sink listen on *host*, unless it is a loopback one."""
    if _is_loopback(host):
        return None
    return (
        f"warning: listening on {host}, not a loopback address: other machines can reach"
        " the sink, its stored calls (visitors' IP addresses and user agents) and its reset,"
        " with no login. It answers Host names localhost, 127.0.0.1, [::1],"
        f" {_host_name(host)} and any given with --allow-host."
    )


def _host_name(host: str) -> str:
    """*host* as it appears in a ``Host`` header, port aside: lower case, IPv6 in brackets."""
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _name_of(header: str) -> str | None:
    """The name in a ``Host`` header value, port dropped, in lower case; None if malformed."""
    match = _HOST_HEADER.fullmatch(header)
    return match["name"].lower() if match else None


class AllowedHostsMiddleware:
    """Pure ASGI: a 400, before any handler runs, for a ``Host`` outside the allow-list.

    Loopback names are always allowed, with any port; *hosts* adds names or
    addresses (the one the server listens on, say). A request without exactly
    one ``Host`` header is refused too: every browser sends one.
    """

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = LOOPBACK_NAMES | {_host_name(h) for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            values = [v for k, v in scope["headers"] if k == b"host"]
            name = _name_of(values[0].decode("latin-1")) if len(values) == 1 else None
            if name not in self.allowed:
                error = RequestError(400, "Host not allowed (see --allow-host)")
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

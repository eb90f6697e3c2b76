"""The endpoints under ``/_optibase``: ``script.js``, ``variants`` and the ``collect`` beacon.

Everything a client sends here is hostile until proven otherwise: the visitor
comes only from the signed cookie, the body is size-capped JSON naming a
conversion of the right type on a page of this site (its scheme and host), a
PROGRAMMATIC conversion is accepted only when its definition says a browser may
fire it (``from_browser=True``: any visitor can post anything a page can), and
every refusal is a short 4xx. Nothing here answers 5xx, and nothing a client
sends puts a traceback in the log. A preview session, another host or a
visitor without consent is answered as usual and records nothing.

A client's time and volume are bounded too: the body must arrive within
``BODY_DEADLINE`` seconds (else 408), and beacons spend budgets (else 429 with
``Retry-After``): one per client address, charged before the body is read, so
a flood of junk costs a header scan; and one per visitor, keyed by the ID the
signed cookie proves and charged only by a beacon that would record, so nobody
can spend another visitor's. Both come after the checks a cross-site page
cannot pass (``Sec-Fetch-Site``, ``Origin``, a JSON content type needs a CORS
preflight), so no other site can spend a visitor's or an address's budget.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.types import Message, Receive, Scope, Send

from ._budgets import Budgets
from ._client_script import ClientScript
from ._config import ConversionType
from ._cookie import read_cookie
from ._optibase import Optibase
from ._preview import NOTHING_FORCED
from ._visitor import Visitor

MAX_BODY_BYTES = 8 * 1024
# Seconds from the first receive for the whole body: a beacon is under 1 KB, and a client
# that trickles one holds a connection and a task for as long as it is let.
BODY_DEADLINE = 5.0
_MAX_URL_LENGTH = 4096
_BEACON_TYPES = {"click": ConversionType.CLICK, "conversion": ConversionType.PROGRAMMATIC}

SetCookie = Callable[[Message, Visitor, Scope], Message]
Site = tuple[str, str]  # (scheme, host) of this site, as the client asked for it


class _Refused(Exception):
    def __init__(self, status: int, error: str, *headers: tuple[bytes, bytes]) -> None:
        self.status = status
        self.error = error
        self.headers = headers


class Endpoints:
    """Serves ``script.js``, ``variants`` and ``collect`` under the configured prefix.

    *set_cookie* adds the visitor cookie to a response start when it changed
    (``variants`` may mint a visitor).
    """

    def __init__(self, optibase: Optibase, script: ClientScript, set_cookie: SetCookie) -> None:
        self._optibase = optibase
        self._script_for = script.for_root
        self._set_cookie = set_cookie
        settings = optibase.settings
        visitor_budget, ip_budget = settings.collector_visitor_budget, settings.collector_ip_budget
        self._visitor_budgets = Budgets(*visitor_budget) if visitor_budget else None
        self._ip_budgets = Budgets(*ip_budget) if ip_budget else None
        prefix = settings.prefix
        self._routes = {
            f"{prefix}/script.js": self._script,
            f"{prefix}/variants": self._variants,
            f"{prefix}/collect": self._collect,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        """Answer a request whose *route* (path under the app's root) is under the prefix."""
        handler = self._routes.get(route)
        try:
            if handler is None:
                raise _Refused(404, "not found")
            await handler(scope, receive, send)
        except _Refused as refused:
            await _json(send, refused.status, {"error": refused.error}, refused.headers)
        except Exception as exc:
            # No traceback: whatever a client's request sets off, it can set off again and again.
            self._optibase._request_log.warning(
                f"{route} {type(exc).__name__}",
                f"optibase: {route} failed on a request ({exc!r:.200}); answered 400",
            )
            await _json(send, 400, {"error": "request could not be processed"})

    async def _script(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise _Refused(405, "method not allowed")
        script, etag, _ = self._script_for(scope.get("root_path", ""))
        headers = [
            (b"content-type", b"application/javascript; charset=utf-8"),
            (b"cache-control", b"public, max-age=300"),
            (b"etag", etag.encode()),
        ]
        if _header(scope, b"if-none-match") == etag:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(script)).encode()))
        body = script if scope["method"] == "GET" else b""
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _variants(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            raise _Refused(405, "method not allowed")
        visitor = self._visitor(scope, read_cookie(scope["headers"], self._optibase._cookie_name))
        payload = {
            "visitor_id": visitor.id,
            "variants": [
                {"test_id": t, "variant_id": v} for t, v in visitor.active_variants.items()
            ],
        }
        start: Message = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-store"),
            ],
        }
        await send(self._set_cookie(start, visitor, scope))
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    async def _collect(self, scope: Scope, receive: Receive, send: Send) -> None:
        optibase = self._optibase
        if scope["method"] != "POST":
            raise _Refused(405, "method not allowed")
        headers = dict(scope["headers"])
        ip, scheme = optibase._client(scope, headers)
        site = (scheme, headers.get(b"host", b"").decode("latin-1").lower())
        _refuse_cross_site(headers, site)
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if content_type != b"application/json":
            raise _Refused(415, "content-type must be application/json")
        # Past the checks no other site's page passes, and before the body: junk costs little.
        if self._ip_budgets is not None and ip is not None:
            wait = self._ip_budgets.spend(ip)
            if wait:
                self._warn_if_proxied(scope, headers, ip)
                raise _too_many(wait, "this address")
        body = await _read_body(headers.get(b"content-length"), receive)
        try:
            data = json.loads(body)
        except RecursionError:  # a RecursionError is no ValueError: "[[[[…" of 8 KB raises it
            raise _Refused(400, "body is nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _Refused(400, "body must be a JSON object")
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in _BEACON_TYPES:
            raise _Refused(400, "type must be 'click' or 'conversion'")
        conversion_id = data.get("conversion_id")
        if not isinstance(conversion_id, str) or not conversion_id:
            raise _Refused(400, "conversion_id must be a non-empty string")
        url = data.get("url")
        if not isinstance(url, str) or len(url) > _MAX_URL_LENGTH or not _same_site(url, site):
            raise _Refused(400, "url must be a page of this site")
        referrer = data.get("referrer", "")
        if not isinstance(referrer, str) or len(referrer) > _MAX_URL_LENGTH:
            raise _Refused(400, "referrer must be a string")

        conversion = optibase.settings.conversions_by_id.get(conversion_id)
        if conversion is None:
            raise _Refused(404, "unknown conversion_id")
        if conversion.type is not _BEACON_TYPES[kind]:
            raise _Refused(400, f"conversion {conversion_id!r} is not a {kind} conversion")
        if not conversion.browser_may_fire:
            raise _Refused(403, f"conversion {conversion_id!r} is not fired from the browser")

        token = read_cookie(scope["headers"], optibase._cookie_name)
        visitor = self._visitor(scope, token, may_mint=False, headers=headers)
        if visitor._quiet():
            if visitor._screen() == "stranger":
                raise _Refused(403, "no valid visitor cookie")
            # A preview, another host, no consent (or a bot): a well-formed beacon from
            # a page this site served, that records nothing, as the page itself did.
            await _no_content(send)
            return
        # Only a beacon that would record, under the ID the cookie proves, spends this one.
        if self._visitor_budgets is not None:
            wait = self._visitor_budgets.spend(visitor.id)
            if wait:
                raise _too_many(wait, "this visitor")
        # The beacon's request is not the page's: the page and its referrer come from the body.
        context = visitor._request_context()._replace(page=(url, referrer or None))
        visitor._fire(conversion, origin_url=url, context=context, beacon=True)
        await _no_content(send)

    def _visitor(
        self,
        scope: Scope,
        token: str | None,
        *,
        may_mint: bool = True,
        headers: dict[bytes, bytes] | None = None,
    ) -> Visitor:
        previews = self._optibase._previews
        forced = previews.from_cookie(scope) if previews is not None else NOTHING_FORCED
        return Visitor(self._optibase, scope, token, forced, may_mint=may_mint, headers=headers)

    def _warn_if_proxied(self, scope: Scope, headers: Mapping[bytes, bytes], ip: str) -> None:
        """Say so when the address out of budget is a proxy's that forwards for others.

        Unless ``trusted_proxies`` lists it, every client behind it shares its budget.
        """
        peer = scope.get("client")
        if b"x-forwarded-for" in headers and peer is not None and peer[0] == ip:
            self._optibase._request_log.warning(
                "collector proxy",
                f"optibase: the collector's per-address budget refused {ip}, which forwards "
                "requests for others (X-Forwarded-For): add it to trusted_proxies",
            )


def _too_many(wait: float, whose: str) -> _Refused:
    retry_after = str(max(1, math.ceil(wait))).encode()
    return _Refused(429, f"too many beacons from {whose}", (b"retry-after", retry_after))


def _refuse_cross_site(headers: Mapping[bytes, bytes], site: Site) -> None:
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None and fetch_site not in (b"same-origin", b"none"):
        raise _Refused(403, "cross-site request")
    origin = headers.get(b"origin")
    if origin is not None and not _same_site(origin.decode("latin-1"), site):
        raise _Refused(403, "cross-site request")


def _same_site(url: str, site: Site) -> bool:
    """*url* is on this site: the same scheme and host (``Origin: null`` is not)."""
    scheme, host = site
    if not host:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == scheme and parts.netloc.lower() == host


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(declared: bytes | None, receive: Receive) -> bytes:
    if declared is not None:
        try:
            if int(declared) > MAX_BODY_BYTES:
                raise _Refused(413, f"body over {MAX_BODY_BYTES} bytes")
        except ValueError:
            raise _Refused(400, "bad content-length") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Refused(400, "client went away")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Refused(413, f"body over {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        # The rest of the body may still be coming: the connection cannot carry another request.
        raise _Refused(
            408, f"body not received within {BODY_DEADLINE:g} s", (b"connection", b"close")
        ) from None


async def _no_content(send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _json(
    send: Send, status: int, payload: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

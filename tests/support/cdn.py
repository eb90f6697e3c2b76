"""A shared cache in front of a site, as a CDN is: what it does with a per-visitor page.

:class:`SharedCache` is an ASGI app to run with :func:`~tests.support.server.serve`.
It forwards every request to a loopback *upstream* with an ``httpx2.AsyncClient``
and keeps what a shared cache may keep. Entries are keyed by path and query
alone, never by Cookie (as a CDN's are unless configured otherwise), so what it
stores it serves to every visitor. It follows this subset of RFC 9111 (HTTP
Caching) for a shared cache, the rules that decide whether one visitor's
response reaches another:

* Only a GET answered 200 is stored, and only a GET is looked up; anything else
  is forwarded and stored nowhere.
* The governing field is the first present of ``Cloudflare-CDN-Cache-Control``,
  ``CDN-Cache-Control`` (RFC 9213) and ``Surrogate-Control`` (Fastly); then
  ``Cache-Control`` is ignored entirely. Without any of them it is
  ``Cache-Control``.
* Not stored: the governing field says ``no-store`` or ``private`` (qualified
  with field names or not), or ``no-cache`` (which demands revalidation, and
  this cache never revalidates); or ``Vary: *``.
* Freshness lifetime (§4.2.1): ``s-maxage``, else ``max-age``; with neither, a
  heuristic lifetime (§4.2.2) of *heuristic_ttl* seconds, as Varnish's
  default TTL and Fastly's fallback TTL give. A lifetime of 0, or a malformed
  value, is not stored.
* A stored response is served while its age (seconds since it was stored, by
  *clock*) is below its lifetime; after that it is dropped and the request
  goes upstream.
* ``Vary`` (§4.1): a stored response serves only requests whose listed
  headers have the values of the request that stored it. Of several, the
  newest matching one serves.
* ``Set-Cookie`` is stored and replayed with the rest of the response: RFC 9111
  lets a cache do so, and a CDN that was told a response is public does.
  (Fastly's and Varnish's defaults refuse to store one; a "cache everything"
  rule does not. Being naive here is what makes a leak visible.)
* Hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and the fields it names,
  ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
  ``Proxy-*``) are not forwarded either way. Every other header passes
  unchanged, the CDN-targeted ones included (a real Fastly strips
  ``Surrogate-Control``; here a test must see what the site sent).
* Every answer carries ``X-Cache: HIT`` (from storage, with ``Age``) or
  ``X-Cache: MISS`` (from upstream).
* At most *max_entries* responses are kept; the least recently used URL goes
  first.

Not modelled: ``Expires``, the upstream's own ``Age``, revalidation
(``ETag``/``If-None-Match``), ``stale-*``, invalidation by unsafe methods
(§4.4), request ``Cache-Control``, ``Authorization`` (§3.5), HEAD, ranges.
Bodies are buffered, not streamed.
"""

from __future__ import annotations

import http.cookiejar
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx2
from starlette.types import Message, Receive, Scope, Send

from tests.support.net import LOOPBACK

RawHeaders = list[tuple[bytes, bytes]]

# The fields a CDN honours in place of Cache-Control, in the order it prefers them.
TARGETED_FIELDS = ("cloudflare-cdn-cache-control", "cdn-cache-control", "surrogate-control")
# no-cache: usable only once revalidated, and this cache never revalidates.
_NOT_STORED = frozenset({"no-store", "private", "no-cache"})
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def directives(value: str) -> dict[str, str]:
    """``'public, max-age="60"'`` -> ``{"public": "", "max-age": "60"}``: names lower-cased."""
    found: dict[str, str] = {}
    for part in value.split(","):
        name, _, argument = part.partition("=")
        if name.strip():
            found[name.strip().lower()] = argument.strip().strip('"')
    return found


def shared_lifetime(headers: httpx2.Headers, heuristic_ttl: float) -> float:
    """Seconds a shared cache may serve this 200 answer to a GET; 0 when it may not store it."""
    if "*" in _tokens(headers.get_list("vary")):
        return 0.0
    governing = next((name for name in TARGETED_FIELDS if name in headers), "cache-control")
    found = directives(",".join(headers.get_list(governing)))
    if _NOT_STORED & found.keys():
        return 0.0
    for name in ("s-maxage", "max-age"):
        if name in found:
            seconds = found[name]
            return float(seconds) if seconds.isdigit() else 0.0
    return heuristic_ttl


@dataclass(frozen=True)
class _Stored:
    status: int
    headers: RawHeaders  # end-to-end headers, as upstream sent them
    body: bytes
    stored_at: float
    lifetime: float
    # The headers Vary names, with the values the storing request had (None: absent).
    selecting: tuple[tuple[str, str | None], ...]

    def age(self, now: float) -> float:
        return now - self.stored_at

    def selected_by(self, request_headers: Mapping[str, str]) -> bool:
        return all(request_headers.get(name) == value for name, value in self.selecting)


class SharedCache:
    """A caching reverse proxy in front of *upstream* (``http://127.0.0.1:PORT``).

    Serve it with a lifespan (``serve()``'s default): startup opens the client
    it forwards with, shutdown closes it. *clock* is read for every store and
    lookup, so a test can move time on instead of sleeping.
    """

    def __init__(
        self,
        upstream: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        heuristic_ttl: float = 60.0,
        max_entries: int = 1024,
    ) -> None:
        if httpx2.URL(upstream).host != LOOPBACK:
            raise ValueError(f"SharedCache forwards to {LOOPBACK} only, not {upstream!r}")
        self._upstream = upstream
        self._clock = clock
        self._heuristic_ttl = heuristic_ttl
        self._max_entries = max_entries
        self._stored: OrderedDict[str, list[_Stored]] = OrderedDict()  # by target, newest first
        self._client: httpx2.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            raise RuntimeError(f"SharedCache serves HTTP only, not {scope['type']!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # A jar that accepts nothing: a client shared by every visitor must not
                # keep one visitor's cookie and send it upstream for the next.
                jar = http.cookiejar.CookieJar(
                    http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
                )
                self._client = httpx2.AsyncClient(
                    base_url=self._upstream, cookies=jar, trust_env=False
                )
                self._client.headers.clear()  # forward the visitor's headers, not httpx2's
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope["query_string"].decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        request_headers = _combined(scope["headers"])
        is_get = scope["method"] == "GET"
        now = self._clock()
        hit = self._lookup(target, request_headers, now) if is_get else None
        if hit is not None:
            age = str(int(hit.age(now))).encode()
            await _answer(
                send, hit.status, [*hit.headers, (b"x-cache", b"HIT"), (b"age", age)], hit.body
            )
            return
        status, headers, body = await self._forward(scope, target, await _request_body(receive))
        lifetime = shared_lifetime(httpx2.Headers(headers), self._heuristic_ttl)
        if is_get and status == 200 and lifetime > 0:
            vary = _tokens(value.decode("latin-1") for name, value in headers if name == b"vary")
            selecting = tuple((name, request_headers.get(name)) for name in vary)
            self._store(target, _Stored(status, headers, body, self._clock(), lifetime, selecting))
        await _answer(send, status, [*headers, (b"x-cache", b"MISS")], body)

    async def _forward(
        self, scope: Scope, target: str, body: bytes
    ) -> tuple[int, RawHeaders, bytes]:
        assert self._client is not None, "SharedCache needs its lifespan to run"
        request = self._client.build_request(
            scope["method"], target, headers=_end_to_end(scope["headers"]), content=body
        )
        response = await self._client.send(request, stream=True)
        try:
            # Raw: the body exactly as upstream encoded it, to match its headers.
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return response.status_code, _end_to_end(response.headers.raw), raw

    def _lookup(
        self, target: str, request_headers: Mapping[str, str], now: float
    ) -> _Stored | None:
        stored = self._stored.get(target)
        if stored is None:
            return None
        # No revalidation here: a stale response is of no further use.
        stored[:] = [entry for entry in stored if entry.age(now) < entry.lifetime]
        if not stored:
            del self._stored[target]
            return None
        self._stored.move_to_end(target)
        return next((entry for entry in stored if entry.selected_by(request_headers)), None)

    def _store(self, target: str, entry: _Stored) -> None:
        others = [old for old in self._stored.pop(target, []) if old.selecting != entry.selecting]
        self._stored[target] = [entry, *others]
        while sum(map(len, self._stored.values())) > self._max_entries:
            oldest = next(iter(self._stored))
            self._stored[oldest].pop()
            if not self._stored[oldest]:
                del self._stored[oldest]


def _tokens(values: Iterable[str]) -> list[str]:
    """The comma-separated tokens of a list-valued field's lines, lower-cased."""
    return [
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    ]


def _combined(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name, repeated lines joined with ", " (RFC 9110 §5.3)."""
    combined: dict[str, str] = {}
    for name, value in headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        combined[key] = f"{combined[key]}, {text}" if key in combined else text
    return combined


def _end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """*headers* (lower-cased) without hop-by-hop fields, nor Content-Length: it is set anew."""
    lowered = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in lowered
        if name == b"connection"
        for token in value.split(b",")
    }
    dropped = _HOP_BY_HOP | named | {b"content-length"}
    return [(name, value) for name, value in lowered if name not in dropped]


async def _request_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; forward what came
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer(send: Send, status: int, headers: RawHeaders, body: bytes) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})

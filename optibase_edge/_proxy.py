"""``ReverseProxy``: a pure ASGI app that forwards every HTTP request to an upstream origin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from urllib.parse import quote

import httpx2
from starlette.types import Message, Receive, Scope, Send

from ._delivery.per_loop import PerLoop
from ._forwarding import Upstream, request_headers
from ._proxies import TrustedProxies, parse_networks, socket_client

logger = logging.getLogger("optibase_edge")

# What a client may send in a URL as it is; other bytes (UTF-8 from a careless
# client) are escaped, which means the same to the upstream.
_URL_CHARACTERS = "!#$%&'()*+,/:;=?@[]~"
_PAGES = {
    502: ("Bad Gateway", "The upstream server could not be reached."),
    503: ("Service Unavailable", "Every connection to the upstream server is in use."),
    504: ("Gateway Timeout", "The upstream server did not answer in time."),
}


class ReverseProxy:
    """Forwards each HTTP request to *upstream_url* and streams the answer back.

    ``OptibaseMiddleware(ReverseProxy("http://127.0.0.1:8080"), optibase=ob)``
    puts a site written in anything behind the middleware.

    Forwarded: the method, the path as the client sent it (``raw_path``) and the
    query, after the path of *upstream_url* if it has one; the headers but the
    hop-by-hop ones (those the ``Connection`` header names too) and ``Host``
    (the upstream gets its own), with ``X-Forwarded-For`` (the client's address
    appended), ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` set; and the body.
    ``Accept-Encoding`` offers the upstream only the codings the middleware can
    decode (gzip, deflate, and br when ``brotli`` is installed), ``identity``
    if none of them is left. Redirects are never followed.

    Rewritten on the way back: hop-by-hop headers are dropped, and the
    upstream's ``Date`` and ``Server`` (the edge's server sends its own); a
    ``Location`` that is an absolute URL into the upstream points at the edge,
    as the client named it (its scheme, its ``Host``); a
    ``Set-Cookie`` whose ``Domain`` names the upstream's host or a parent of it
    loses that attribute, so the cookie is the edge's. Bodies pass as the
    upstream sent them, compressed or not, with their ``Content-Encoding`` and
    ``Content-Length``.

    Memory: both bodies are streamed, one chunk of each direction at a time.
    If the client goes away, the exchange with the upstream stops.

    Errors, before the response has started, are short HTML pages, not stored
    by any cache: 502 if the upstream cannot be reached (refused, unknown,
    *connect_timeout* passed) or breaks the exchange off, 504 if it is silent
    for *read_timeout*, 503 if all *max_connections* connections to it stay in
    use for *connect_timeout*. Once the status has gone out it cannot change:
    an upstream failing mid-body makes the proxy raise, so that the server
    aborts the connection and the client sees the body cut short rather than
    a complete-looking one. Each failure is logged as a warning on the
    ``optibase_edge`` logger.

    Behind a TLS terminator or another proxy, list its addresses in
    *trusted_proxies* (CIDRs, as the middleware's setting of that name): the
    ``X-Forwarded-Proto`` it sends is then the client's scheme, passed up and
    used in rewritten ``Location`` headers; otherwise the scheme is the
    connection's.

    Connections are pooled (up to *max_connections* per event loop, each kept
    open between requests) and closed on lifespan shutdown or :meth:`aclose`.
    WebSockets are not proxied: a WebSocket handshake is refused (HTTP 403).
    *transport* replaces the network (and the pool), for tests:
    ``httpx2.MockTransport``. A bad argument raises ``ValueError`` naming it.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_connections: int = 100,
        trusted_proxies: Sequence[str] = (),
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._upstream = Upstream.parse(upstream_url)
        try:
            networks = parse_networks(trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None
        # None without proxies: the connection's scheme, read without a header map.
        self._trusted = TrustedProxies(networks) if networks else None
        numbers = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_connections": max_connections,
        }
        for name, number in numbers.items():
            if not number > 0:  # NaN too
                raise ValueError(f"{name} must be positive, not {number!r}")
        self._base = httpx2.URL(upstream_url)
        self._prefix = self._upstream.prefix.encode()
        self._transport = transport
        self._limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # Waiting for a free connection is part of getting one: connect_timeout.
        # Writing the body up waits on the upstream as reading its answer does.
        self._timeout = httpx2.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        self._clients = PerLoop(self._new_client)

    def _new_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=self._transport,
            limits=self._limits,
            timeout=self._timeout,
            follow_redirects=False,
            # The upstream is the address given, not one HTTP_PROXY or .netrc speaks for.
            trust_env=False,
        )

    async def aclose(self) -> None:
        """Close the connections to the upstream of the running event loop."""
        await self._clients.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close"})  # before the accept: the server says 403
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A server of ASGI < 2.4 (uvicorn) drops what is sent to a client that left
        # without saying so: only an http.disconnect tells. Once the request body is
        # read, a second task listens for it and stops an exchange still under way.
        body_read = asyncio.Event()
        answered = False

        async def answer(message: Message) -> None:
            nonlocal answered
            await send(message)
            answered = message["type"] == "http.response.body" and not message.get("more_body")

        exchange = asyncio.create_task(self._exchange(scope, receive, answer, body_read))
        listener = asyncio.create_task(_disconnect(receive, body_read))
        try:
            await asyncio.wait((exchange, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            listener.cancel()
            # After the last message, the server reports a disconnect too: then the
            # exchange is only putting its connection back in the pool.
            if not answered:
                exchange.cancel()
            await asyncio.wait((exchange,))
        if not exchange.cancelled():
            exchange.result()  # raises what has to abort the response

    async def _exchange(
        self, scope: Scope, receive: Receive, send: Send, body_read: asyncio.Event
    ) -> None:
        headers = scope["headers"]
        client = scope.get("client")
        # The scheme the client used: a TLS terminator in trusted_proxies says it.
        trusted = self._trusted
        scheme = (
            socket_client(scope) if trusted is None else trusted.client(scope, dict(headers))
        )[1]
        content = None
        if any(name in (b"content-length", b"transfer-encoding") for name, _ in headers):
            content = _body(receive, body_read)
        else:
            body_read.set()
        request = httpx2.Request(
            scope["method"],
            self._url(scope),
            headers=request_headers(headers, client[0] if client else None, scheme),
            content=content,
        )
        try:
            response = await self._clients.get().send(request, stream=True)
        except _ClientGone:
            return
        except httpx2.TransportError as exc:
            await self._error_page(scope, send, exc)
            return
        host = next((value for name, value in headers if name == b"host"), None)
        edge_origin = None if host is None else scheme.encode() + b"://" + host
        start = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": self._upstream.response_headers(response.headers.raw, edge_origin),
        }
        # The bytes as they came, never decoded. Not aiter_raw(): it refuses a body
        # read already, as a MockTransport's httpx2.Response(content=...) is.
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)  # an AsyncClient's
        try:
            await send(start)
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            return  # an ASGI 2.4 server's word for a client that left
        except httpx2.TransportError as exc:
            logger.warning(
                "optibase: upstream %s broke off %s %s mid-body (%s); aborting the response",
                self._upstream.url,
                scope["method"],
                scope["path"],
                _describe(exc),
            )
            raise _CutShort(f"the upstream broke off the body: {_describe(exc)}") from None
        finally:
            await response.aclose()

    def _url(self, scope: Scope) -> httpx2.URL:
        raw_path: bytes | None = scope.get("raw_path")
        target = quote(scope["path"]).encode() if raw_path is None else raw_path
        query: bytes = scope.get("query_string", b"")
        if query:
            target += b"?" + query
        if not target.isascii():
            target = quote(target, safe=_URL_CHARACTERS).encode()
        # Dot segments are resolved on the client's path alone: "/../x" is "/x" under
        # the prefix, never a way out of it.
        url = self._base.copy_with(raw_path=target)
        if self._prefix:
            url = url.copy_with(raw_path=self._prefix + url.raw_path)
        return url

    async def _error_page(self, scope: Scope, send: Send, exc: httpx2.TransportError) -> None:
        if isinstance(exc, httpx2.PoolTimeout):
            status = 503
        elif isinstance(exc, httpx2.TimeoutException) and not isinstance(
            exc, httpx2.ConnectTimeout
        ):
            status = 504
        else:
            status = 502
        logger.warning(
            "optibase: upstream %s failed %s %s (%s); answered %d",
            self._upstream.url,
            scope["method"],
            scope["path"],
            _describe(exc),
            status,
        )
        reason, text = _PAGES[status]
        body = (
            f"<!doctype html><title>{status} {reason}</title>"
            f"<h1>{status} {reason}</h1><p>{text}</p>\n"
        ).encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"content-length", str(len(body)).encode()),
        ]
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except OSError:
            pass  # the client left meanwhile


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class _CutShort(Exception):
    """Raised to the server so it aborts a response whose body the upstream broke off."""


async def _body(receive: Receive, body_read: asyncio.Event) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk as the server hands it over; sets *body_read* at its end.

    A disconnect raises :class:`_ClientGone`: ending quietly would pass a short body
    off as whole.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body: bytes = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            body_read.set()
            return


async def _disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Return when the client has disconnected, listening once the body has been read."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass  # what is left of a body the upstream answered without reading


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

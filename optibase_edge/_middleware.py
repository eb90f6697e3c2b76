"""``OptibaseMiddleware``: pure ASGI, in front of any Starlette or FastAPI app."""

from __future__ import annotations

import logging
from collections import OrderedDict
from urllib.parse import quote

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._assignment import Plan
from ._caching import for_one_visitor, not_stored
from ._client_script import ClientScript
from ._config import Conversion, ConversionType
from ._cookie import cookie_in, is_secure, read_cookie, set_cookie_header
from ._endpoints import Endpoints
from ._injection import HtmlInjector, script_tag_end, script_tag_parts
from ._optibase import Optibase
from ._preview import NOTHING_FORCED
from ._visitor import Visitor

logger = logging.getLogger("optibase_edge")

SCOPE_KEY = "optibase.visitor"
_INJECTING = "optibase.injecting"  # set in the scope by the first middleware that injects
_TAG_CACHE_SIZE = 16_384


class OptibaseMiddleware:
    """Recognise visitors, assign tests, detect conversions, report to Segment.

    ``app.add_middleware(OptibaseMiddleware, optibase=ob)``. HTTP requests get a
    lazily loaded :class:`Visitor` (``get_visitor(request)``); the tests whose
    ``pages`` match the path are assigned on GET; PAGE_VIEW conversions fire when
    a matching GET ends in a 2xx; the visitor cookie is set on the response only
    when it changed. A visitor in a split-URL variant is served the variant's
    path (rewritten inside the app, or redirected). A response that depended on
    its visitor is marked ``Cache-Control: private`` so no shared cache hands it
    to someone else. The endpoints under ``prefix`` (``/_optibase``) are served
    here. Lifespan startup starts delivery and shutdown flushes it. Nothing here
    turns a page into an error: a failure of this library is logged and the page
    is served as if the middleware were not there.
    """

    def __init__(self, app: ASGIApp, optibase: Optibase) -> None:
        self.app = app
        self.optibase = optibase
        settings = optibase.settings
        self._script = ClientScript(settings)
        self._endpoints = Endpoints(optibase, self._script, self._set_cookie)
        self._prefix = settings.prefix + "/"
        inject = settings.inject_script
        if inject is None:
            inject = any(c.type is ConversionType.CLICK for c in settings.conversions)
        self._inject = inject
        self._script_marker = f"{settings.prefix}/script.js".encode()
        self._previews = optibase._previews
        self._private_responses = settings.cache_control is not None
        # Headers about the app's body that a held start loses when a tag goes in.
        self._replaced_on_injection = (
            (b"content-length", b"etag") if self._private_responses else (b"content-length",)
        )
        self._redirect_split = settings.split_url == "redirect"
        self._csp_nonce = settings.csp_nonce
        self._tag_cache: OrderedDict[
            tuple[tuple[tuple[str, str], ...], str, int], tuple[bytes, bytes]
        ]
        self._tag_cache = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "http":
            await self._http(scope, receive, send)
        elif scope_type == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        optibase = self.optibase
        route = _route_path(scope["path"], scope)
        if route.startswith(self._prefix):
            await self._endpoints(scope, receive, send, route)
            return
        headers = scope["headers"]
        if not isinstance(headers, list | tuple):  # ASGI allows any iterable: read it once
            headers = scope["headers"] = list(headers)
        header_map = dict(headers)  # the visitor reads it anyway: one C call for all
        # With no header name repeated (as when the server joined Cookie headers, or
        # got one), the one Cookie header answers both cookie questions without a scan.
        cookie = header_map.get(b"cookie", b"") if len(header_map) == len(headers) else None
        if cookie is None:
            token = read_cookie(headers, optibase._cookie_name)
        else:
            token = cookie_in(cookie, optibase._cookie_name)
        forced, preview_cookie = NOTHING_FORCED, None
        if self._previews is not None:
            try:
                forced, preview_cookie = self._previews.read(scope, cookie)
            except Exception:
                logger.exception("optibase: reading the preview failed; serving without one")
        visitor = Visitor(optibase, scope, token, forced, headers=header_map)
        scope[SCOPE_KEY] = visitor
        page_views: tuple[Conversion, ...] = ()
        split_path = None
        is_get = scope["method"] == "GET"
        if is_get:
            try:
                plans, page_views = optibase._pages.for_path(route)
                if plans:
                    visitor._assign_page(plans)
                    split_path = _split_path(plans, visitor)
            except Exception:
                logger.exception("optibase: assigning tests failed; serving the page without")
        app_scope = scope
        if split_path is not None and not self._redirect_split:
            app_scope = _rewritten(scope, split_path)
        # HEAD is injected as GET is, so that it announces the GET's Content-Length.
        inject = self._inject and (is_get or scope["method"] == "HEAD")
        responder = _Responder(self, app_scope, send, visitor, page_views, inject, preview_cookie)
        try:
            if split_path is not None and self._redirect_split:
                await _redirect(responder.send, _under_root(split_path, scope), scope)
            else:
                await self.app(app_scope, receive, responder.send)
        finally:
            # The visitor refers to the scope: end the cycle for GC.
            scope.pop(SCOPE_KEY, None)
            app_scope.pop(SCOPE_KEY, None)

    def _injector_for(self, start: Message, visitor: Visitor, scope: Scope) -> HtmlInjector | None:
        html = length_declared = False
        for key, value in start.get("headers", ()):
            key = key.lower()
            if key == b"content-type":
                html = value[:9].lower() == b"text/html"
            elif key == b"content-length":
                length_declared = True
            elif key == b"content-encoding":
                return None  # compressed: leave it be
        if not html or scope.get(_INJECTING):
            return None
        scope[_INJECTING] = True  # a second middleware in the stack must not
        nonce = self._csp_nonce
        if callable(nonce):
            nonce = nonce(scope)
        before, after = self._tag_parts(visitor)
        tag = before + visitor.id.encode() + after + script_tag_end(nonce)
        return HtmlInjector(tag, self._script_marker, length_declared)

    def _tag_parts(self, visitor: Visitor) -> tuple[bytes, bytes]:
        """The script tag around the visitor's ID, as their variants make it."""
        # root_path as the request came in (the visitor keeps it): a router in the app
        # may change it in this same scope, as Starlette's Mount does, while the script
        # is served under the one the middleware saw.
        root_path = visitor._path[1]
        if visitor._id is None:
            visitor._load()  # the key is the visitor's assignments: they must be read first
        if visitor._forced:  # a preview: rare, and its variants are not the cookie's
            return script_tag_parts(self._script.for_root(root_path).src, visitor.active_variants)
        # Visitors with the same assignments share all of the tag but their ID: its
        # parts are built once (4 µs: filtering, JSON, escaping), keyed by what decides
        # them, which is cheaper to look up than working out the active variants.
        self.optibase._running()  # brings the schedule epoch up to date
        key = (tuple(visitor._assignments.items()), root_path, self.optibase._running_epoch)
        parts = self._tag_cache.get(key)
        if parts is None:
            src = self._script.for_root(root_path).src
            parts = self._tag_cache[key] = script_tag_parts(src, visitor.active_variants)
            if len(self._tag_cache) > _TAG_CACHE_SIZE:
                self._tag_cache.popitem(last=False)
        return parts

    def _set_cookie(self, message: Message, visitor: Visitor, scope: Scope) -> Message:
        token = visitor._cookie_token()
        if token is None:
            return message
        settings = self.optibase.settings
        header = set_cookie_header(
            settings.cookie_name,
            token,
            max_age=settings.cookie_max_age,
            secure=is_secure(
                settings.cookie_secure, self.optibase._client(scope, visitor._header_map())[1]
            ),
        )
        return {**message, "headers": [*message.get("headers", ()), header]}

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        optibase = self.optibase

        async def receive_and_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await optibase.start()
                except Exception:
                    logger.exception("optibase: could not start delivery")
            return message

        async def flush_then_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await optibase.aclose()
                except Exception:
                    logger.exception("optibase: shutdown flush failed")
            await send(message)

        await self.app(scope, receive_and_start, flush_then_send)


class _Responder:
    """One response's state: PAGE_VIEW conversions, cookies, caching, the script tag, the length.

    On ``http.response.start`` the conversions fire (2xx only), the cookies are
    added when they changed, an injector is chosen for an uncompressed HTML body
    of a 200 (no other status has a whole page to take the tag: a 206's range,
    a 304's or 204's empty body), and a response that depended on its visitor is
    made private (a preview's, not stored at all). If the start declares a
    Content-Length that injection will change, it is held back until the first
    body message, then released with the new length (or none, for a streamed
    body: the server chunks it). Any other message (``http.response.pathsend``,
    ``zerocopysend``, ``trailers``) releases a held start unchanged and is
    passed on: nothing is injected into a file sent by path. So does an empty
    last body, a HEAD's that leaves the body out. A HEAD is otherwise injected
    as its GET is, for the same Content-Length.
    """

    __slots__ = (
        "_held_start",
        "_inject",
        "_injector",
        "_middleware",
        "_page_views",
        "_preview_cookie",
        "_scope",
        "_send",
        "_visitor",
    )

    def __init__(
        self,
        middleware: OptibaseMiddleware,
        scope: Scope,
        send: Send,
        visitor: Visitor,
        page_views: tuple[Conversion, ...],
        inject: bool,
        preview_cookie: tuple[bytes, bytes] | None,
    ) -> None:
        self._middleware = middleware
        self._preview_cookie = preview_cookie
        self._scope = scope
        self._send = send
        self._visitor = visitor
        self._page_views = page_views
        self._inject = inject
        self._injector: HtmlInjector | None = None
        self._held_start: Message | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        injector = self._injector
        if kind == "http.response.start":
            message = self._start(message)
            injector = self._injector
            if injector is not None and injector.length_declared:
                self._held_start = message  # the length is known once the first chunk is seen
                return
        elif (
            kind == "http.response.body"
            and injector is not None
            and (self._held_start is None or message.get("body") or message.get("more_body"))
        ):
            # Inline rather than a helper coroutine: an extra await per chunk is measurable.
            more_body = message.get("more_body", False)
            body = injector.feed(message.get("body", b""), more_body)
            if self._held_start is not None:
                start, self._held_start = self._held_start, None
                # The body is ours now: the app's length (and ETag) described its own.
                replaced = self._middleware._replaced_on_injection
                headers = [h for h in start["headers"] if h[0].lower() not in replaced]
                if not more_body:
                    headers.append((b"content-length", str(len(body)).encode()))
                # A streamed body's final length is unknown: the server will chunk it.
                await self._send({**start, "headers": headers})
            message = {**message, "body": body}
        elif self._held_start is not None:
            # Also an empty body under a declared length: a HEAD answered without its
            # body, as Starlette's FileResponse does. Its length stays the app's,
            # short of the GET's by the tag: a limit, as a file sent by path has.
            start, self._held_start = self._held_start, None
            self._injector = None
            await self._send(start)
        await self._send(message)

    def _start(self, message: Message) -> Message:
        visitor = self._visitor
        try:
            if self._page_views and 200 <= message["status"] < 300:
                for conversion in self._page_views:
                    visitor._fire(conversion)
            if self._inject and message["status"] == 200:
                self._injector = self._middleware._injector_for(message, visitor, self._scope)
            message = self._middleware._set_cookie(message, visitor, self._scope)
            if self._preview_cookie is not None:
                headers = [*message.get("headers", ()), self._preview_cookie]
                message = {**message, "headers": headers}
            if self._middleware._private_responses:
                message = self._cache_safe(message)
        except Exception:
            self._injector = None
            logger.exception("optibase: could not finish the visitor; response unchanged")
        return message

    def _cache_safe(self, message: Message) -> Message:
        visitor = self._visitor
        if visitor._forced or self._preview_cookie is not None:
            return {**message, "headers": not_stored(message.get("headers", ()))}
        if visitor._id is None:
            return message  # nothing about the visitor was used: the app's caching stands
        # A held start loses its ETag only if a body is injected (not for a file sent by path).
        injector = self._injector
        drop_etag = injector is not None and not injector.length_declared
        headers = for_one_visitor(message.get("headers", ()), drop_etag=drop_etag)
        return {**message, "headers": headers}


def _split_path(plans: tuple[Plan, ...], visitor: Visitor) -> str | None:
    """The path of the split-URL variant this visitor is in, on a page of these tests."""
    for plan in plans:
        if plan.split_paths:
            variant = visitor._variant(plan)
            if variant is not None and variant in plan.split_paths:
                return plan.split_paths[variant]
    return None


def _under_root(path: str, scope: Scope) -> str:
    """*path* of the app, as a full path when the server puts ``root_path`` in ``path``."""
    root_path: str = scope.get("root_path", "")
    if root_path and scope["path"].startswith(root_path):
        return root_path + path
    return path


def _rewritten(scope: Scope, path: str) -> Scope:
    """A copy of *scope* for the app to route *path* instead.

    The visitor (and so every event) keeps the original scope: the URL that was
    asked for, query string included, is the one on record.
    """
    location = _under_root(path, scope)
    return {**scope, "path": location, "raw_path": quote(location).encode()}


async def _redirect(send: Send, location: str, scope: Scope) -> None:
    query: bytes = scope.get("query_string", b"")
    target = quote(location).encode() + (b"?" + query if query else b"")
    headers = [(b"location", target), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _route_path(path: str, scope: Scope) -> str:
    """*path* relative to the app's ``root_path``, as Starlette routes it."""
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    rest = path[len(root_path) :]
    if rest and not rest.startswith("/"):
        return path  # "/shopping" is not under "/shop"
    return rest or "/"


def get_visitor(request: Request) -> Visitor:
    """The current visitor; use in a view or as ``Depends(get_visitor)`` in FastAPI.

    Raises ``RuntimeError`` when ``OptibaseMiddleware`` is not installed.
    """
    visitor = request.scope.get(SCOPE_KEY)
    if visitor is None:
        raise RuntimeError("get_visitor() needs OptibaseMiddleware in front of the app")
    return visitor  # type: ignore[no-any-return]

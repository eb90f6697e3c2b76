"""``OptibaseMiddleware``: pure ASGI, in front of any Starlette or FastAPI app."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._optibase import Optibase, Visitor
from .collector import Collector
from .config import ConversionType
from .injection import HtmlInjector, finish_script_tag, script_tag_opening
from .visitor import read_cookie, set_cookie_header

logger = logging.getLogger("optibase_edge")

SCOPE_KEY = "optibase.visitor"
_TAG_CACHE_SIZE = 16_384


class OptibaseMiddleware:
    """Recognise visitors, assign tests, detect conversions, report to Segment.

    ``app.add_middleware(OptibaseMiddleware, optibase=ob)``. HTTP requests get a
    lazily loaded :class:`Visitor` (``get_visitor(request)``); the tests whose
    ``pages`` match the path are assigned on GET; PAGE_VIEW conversions fire when
    a matching GET ends in a 2xx; the visitor cookie is set on the response only
    when it changed. The endpoints under ``prefix`` (``/_optibase``) are served
    here. Lifespan startup starts delivery and shutdown flushes it. Nothing here
    turns a page into an error: a failure of this library is logged and the page
    is served as if the middleware were not there.
    """

    def __init__(self, app: ASGIApp, optibase: Optibase) -> None:
        self.app = app
        self.optibase = optibase
        self._collector = Collector(optibase)
        self._prefix = optibase.settings.prefix + "/"
        self._cookie_name = optibase.settings.cookie_name
        self._max_age = optibase.settings.cookie_max_age
        self._secure = optibase.settings.cookie_secure
        settings = optibase.settings
        inject = settings.inject_script
        if inject is None:
            inject = any(c.type is ConversionType.CLICK for c in settings.conversions)
        self._inject = inject
        self._script_marker = f"{settings.prefix}/script.js".encode()
        self._openings: OrderedDict[tuple[str, str, int], str] = OrderedDict()

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
            await self._collector(scope, receive, send, self._set_cookie, route)
            return
        visitor = Visitor(optibase, scope, read_cookie(scope["headers"], optibase.cookie_name))
        scope[SCOPE_KEY] = visitor
        page_views: tuple[Any, ...] = ()
        if scope["method"] == "GET":
            try:
                plans, page_views = optibase.for_path(route)
                if plans:
                    visitor.assign_page(plans)
            except Exception:
                logger.exception("optibase: assigning tests failed; serving the page without")

        inject = self._inject and scope["method"] == "GET"
        injector: HtmlInjector | None = None
        held_start: Message | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal injector, held_start
            kind = message["type"]
            if kind == "http.response.start":
                try:
                    if page_views and 200 <= message["status"] < 300:
                        for conversion in page_views:
                            visitor.fire(conversion)
                    if inject:
                        injector = self._injector_for(message, visitor, scope)
                    if visitor.changed:
                        message = self._set_cookie(message, visitor, scope)
                except Exception:
                    injector = None
                    logger.exception("optibase: could not finish the visitor; response unchanged")
                if injector is not None and injector.length_declared:
                    held_start = message  # the length is known once the first chunk is seen
                    return
            elif kind == "http.response.body" and injector is not None:
                more_body = message.get("more_body", False)
                body = injector.feed(message.get("body", b""), more_body)
                if held_start is not None:
                    start, held_start = held_start, None
                    headers = [h for h in start["headers"] if h[0].lower() != b"content-length"]
                    if not more_body:
                        headers.append((b"content-length", str(len(body)).encode()))
                    # A streamed body's final length is unknown: the server will chunk it.
                    await send({**start, "headers": headers})
                message = {**message, "body": body}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            scope.pop(SCOPE_KEY, None)  # the visitor refers to the scope: end the cycle for GC

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
        if not html or scope.get("optibase.injecting"):
            return None
        scope["optibase.injecting"] = True  # a second middleware in the stack must not
        nonce = self.optibase.settings.csp_nonce
        if callable(nonce):
            nonce = nonce(scope)
        tag = finish_script_tag(self._tag_opening(visitor, scope), nonce)
        return HtmlInjector(tag, self._script_marker, length_declared)

    def _tag_opening(self, visitor: Visitor, scope: Scope) -> str:
        root_path: str = scope.get("root_path", "")
        token = visitor.unchanged_token
        if token is None:
            return script_tag_opening(
                self._collector.script_src(root_path), visitor.id, visitor.active_variants
            )
        # A returning visitor's tag is the same on every page: build it once per cookie
        # (and per change in which scheduled tests are running).
        key = (token, root_path, self.optibase.schedule_epoch())
        opening = self._openings.get(key)
        if opening is None:
            opening = script_tag_opening(
                self._collector.script_src(root_path), visitor.id, visitor.active_variants
            )
            self._openings[key] = opening
            if len(self._openings) > _TAG_CACHE_SIZE:
                self._openings.popitem(last=False)
        else:
            self._openings.move_to_end(key)
        return opening

    def _set_cookie(self, message: Message, visitor: Visitor, scope: Scope) -> Message:
        token = visitor.cookie_token()
        if token is None:
            return message
        secure = self._secure if self._secure is not None else scope.get("scheme") == "https"
        header = set_cookie_header(self._cookie_name, token, max_age=self._max_age, secure=secure)
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

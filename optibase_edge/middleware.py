"""``OptibaseMiddleware``: pure ASGI, in front of any Starlette or FastAPI app."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._optibase import Optibase, Visitor
from .collector import Collector
from .visitor import read_cookie, set_cookie_header

logger = logging.getLogger("optibase_edge")

SCOPE_KEY = "optibase.visitor"


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
        path: str = scope["path"]
        if path.startswith(self._prefix):
            await self._collector(scope, receive, send, self._set_cookie)
            return
        visitor = Visitor(optibase, scope, read_cookie(scope["headers"], optibase.cookie_name))
        scope[SCOPE_KEY] = visitor
        page_views: tuple[Any, ...] = ()
        if scope["method"] == "GET":
            try:
                plans, page_views = optibase.for_path(path)
                if plans:
                    visitor.assign_page(plans)
            except Exception:
                logger.exception("optibase: assigning tests failed; serving the page without")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                try:
                    if page_views and 200 <= message["status"] < 300:
                        for conversion in page_views:
                            visitor.fire(conversion)
                    message = self._set_cookie(message, visitor, scope)
                except Exception:
                    logger.exception("optibase: could not finish the visitor; response unchanged")
            await send(message)

        await self.app(scope, receive, send_with_cookie)

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


def get_visitor(request: Request) -> Visitor:
    """The current visitor; use in a view or as ``Depends(get_visitor)`` in FastAPI.

    Raises ``RuntimeError`` when ``OptibaseMiddleware`` is not installed.
    """
    visitor = request.scope.get(SCOPE_KEY)
    if visitor is None:
        raise RuntimeError("get_visitor() needs OptibaseMiddleware in front of the app")
    return visitor  # type: ignore[no-any-return]

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
from ._codings import recoder_for
from ._config import Conversion, ConversionType
from ._cookie import cookie_in, is_secure, read_cookie, set_cookie_header
from ._endpoints import Endpoints
from ._injection import HtmlInjector, script_tag_end, script_tag_parts
from ._optibase import Optibase
from ._preview import NOTHING_FORCED
from ._rewrite import BodyRewrite
from ._visitor import Visitor

logger = logging.getLogger("optibase_edge")

SCOPE_KEY = "optibase.visitor"
_REWRITING = "optibase.rewriting"  # set in the scope by the first middleware that rewrites
_TAG_CACHE_SIZE = 16_384
# How much of a page is held back, at most, while its variant blocks may still assign
# the visitor to a test (the cookie and the caching headers go out first). A page is
# ~100 KB at the 90th percentile; past this, the rest is streamed (see _Responder).
_HOLD_LIMIT = 256 * 1024
_NO_PAGE = frozenset((204, 206, 304))  # statuses whose body is no page: empty, or a range


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
        # Headers about the app's body that a held start loses when the body is rewritten.
        self._replaced_on_rewrite = (
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
        responder = _Responder(
            self, app_scope, send, visitor, page_views, inject, scope["method"], preview_cookie
        )
        try:
            if split_path is not None and self._redirect_split:
                await _redirect(responder.send, _under_root(split_path, scope), scope)
            else:
                await self.app(app_scope, receive, responder.send)
        finally:
            # The visitor refers to the scope: end the cycle for GC.
            scope.pop(SCOPE_KEY, None)
            app_scope.pop(SCOPE_KEY, None)

    def _rewrite_for(
        self, start: Message, responder: _Responder, inject: bool, resolve_blocks: bool
    ) -> tuple[BodyRewrite, bool] | None:
        """How this HTML body is rewritten, and whether its start has a length to redo."""
        html = length_declared = False
        coding = None
        for key, value in start.get("headers", ()):
            key = key.lower()
            if key == b"content-type":
                html = value[:9].lower() == b"text/html"
            elif key == b"content-length":
                length_declared = True
            elif key == b"content-encoding":
                coding = value
        scope = responder._scope
        if not html or scope.get(_REWRITING):
            return None
        recoder = None
        if coding is not None and coding.strip().lower() != b"identity":
            recoder = recoder_for(coding)
            if recoder is None:
                return None  # a coding this library cannot undo: the page goes as it is
        scope[_REWRITING] = True  # a second middleware in the stack must not
        choose = responder._choose if resolve_blocks else None
        make_injector = responder._make_injector if inject else None
        return BodyRewrite(recoder, choose, make_injector), length_declared

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
    """One response's state: PAGE_VIEW conversions, cookies, caching, the body's rewriting.

    On ``http.response.start`` the conversions fire (2xx only), and an HTML body
    is rewritten: decoded if it is gzip, deflate or br, its variant blocks
    resolved (any status but those with no page, a 206's range or a 304's or
    204's empty body; any method but HEAD), and the script tag put in (a 200's
    only). Only a GET's 200 assigns a visitor to a test from its blocks; other
    responses show what the visitor already has, or what everyone sees. The
    start is finished,
    with the visitor's cookie when it changed and made private when the
    response depended on its visitor (a preview's, not stored at all), only
    once nothing more can change them.

    So the start is held back while the page's blocks may still assign the
    visitor to a test (the visitor is not read yet, or is not in every running
    test): until the body ends, or ``_HOLD_LIMIT`` of it is held; then the held
    part is rewritten and sent after the start. Blocks met after the start has
    gone out assign no one: the visitor's variant if they have one and the
    response is theirs, else what everyone sees (the control, a stopped test's
    winner). A start whose Content-Length the rewriting changes is held until
    the first body chunk. A body sent whole gets its exact length, or, if the
    rewriting left it as it was, the app's start and bytes unchanged; a
    streamed one none (the server chunks it).

    Any other message (``http.response.pathsend``, ``zerocopysend``,
    ``trailers``) releases a held start and is passed on: nothing is rewritten
    in a file sent by path. So does an empty last body, a HEAD's that leaves
    the body out. A HEAD is otherwise injected as its GET is, for the same
    Content-Length, unless the page has blocks: they are not resolved for it.
    """

    __slots__ = (
        "_held",
        "_held_size",
        "_held_start",
        "_hold_limit",
        "_inject",
        "_is_get",
        "_may_assign",
        "_middleware",
        "_page_views",
        "_preview_cookie",
        "_resolve_blocks",
        "_rewrite",
        "_scope",
        "_send",
        "_shown_to_visitor",
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
        method: str,
        preview_cookie: tuple[bytes, bytes] | None,
    ) -> None:
        self._middleware = middleware
        self._preview_cookie = preview_cookie
        self._scope = scope
        self._send = send
        self._visitor = visitor
        self._page_views = page_views
        self._inject = inject
        # A HEAD serves no page: its blocks are not resolved, nor any test assigned.
        self._resolve_blocks = method != "HEAD"
        self._is_get = method == "GET"
        self._may_assign = False  # known at the start: a GET's 200 may assign
        self._rewrite: BodyRewrite | None = None
        self._held_start: Message | None = None
        self._held: list[bytes] = []
        self._held_size = 0
        self._hold_limit = 0
        # Once the start is out: whether the response is this visitor's alone (None before).
        self._shown_to_visitor: bool | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        rewrite = self._rewrite
        if kind == "http.response.start":
            message = self._start(message)
            if self._held_start is not None:
                return
            message = self._finish(message)
        elif kind == "http.response.body" and rewrite is not None:
            body: bytes = message.get("body", b"")
            more_body: bool = message.get("more_body", False)
            if self._held_start is not None:
                if more_body and (not body or self._held_size + len(body) <= self._hold_limit):
                    self._held.append(body)
                    self._held_size += len(body)
                    return
                if body or self._held:
                    await self._release(body, more_body)
                    return
                # An empty last body and nothing held: a HEAD answered without its
                # body, as Starlette's FileResponse does. Its length stays the app's,
                # short of the GET's by the tag: a limit, as a file sent by path has.
                self._rewrite = None
                await self._send(self._finish(self._take_held_start()))
                await self._send(message)
                return
            # Inline rather than a helper coroutine: an extra await per chunk is measurable.
            message = {**message, "body": rewrite.feed(body, more_body)}
        elif self._held_start is not None:
            if self._held:
                await self._release(b"", True)
            else:
                self._rewrite = None
                await self._send(self._finish(self._take_held_start()))
        await self._send(message)

    async def _release(self, body: bytes, more_body: bool) -> None:
        """Send the held start and the held body, with *body*, rewritten."""
        rewrite = self._rewrite
        assert rewrite is not None
        data = b"".join((*self._held, body)) if self._held else body
        self._held = []
        rewritten = rewrite.feed(data, more_body)  # the blocks assign before the cookie is set
        start = self._take_held_start()
        if not more_body and not rewrite.changed:
            self._rewrite = None  # the app's own page goes out, ETag and all
            await self._send(self._finish(start))
            await self._send({"type": "http.response.body", "body": data})
            return
        # The body is ours now: the app's length (and ETag) described its own.
        replaced = self._middleware._replaced_on_rewrite
        headers = [h for h in start["headers"] if h[0].lower() not in replaced]
        if not more_body:
            headers.append((b"content-length", str(len(rewritten)).encode()))
        await self._send(self._finish({**start, "headers": headers}))
        await self._send({"type": "http.response.body", "body": rewritten, "more_body": more_body})

    def _take_held_start(self) -> Message:
        start = self._held_start
        assert start is not None
        self._held_start = None
        return start

    def _start(self, message: Message) -> Message:
        visitor = self._visitor
        try:
            if self._page_views and 200 <= message["status"] < 300:
                for conversion in self._page_views:
                    visitor._fire(conversion)
            status = message["status"]
            inject = self._inject and status == 200
            resolve_blocks = self._resolve_blocks and status not in _NO_PAGE
            if inject or resolve_blocks:
                found = self._middleware._rewrite_for(message, self, inject, resolve_blocks)
                if found is not None:
                    self._rewrite, length_declared = found
                    self._may_assign = resolve_blocks and status == 200 and self._is_get
                    if resolve_blocks and self._start_waits_for_blocks(inject):
                        self._hold_limit = _HOLD_LIMIT
                        self._held_start = message
                    elif length_declared:
                        self._held_start = message  # its length is known at the first chunk
        except Exception:
            self._rewrite = self._held_start = None
            logger.exception("optibase: could not finish the visitor; response unchanged")
        return message

    def _finish(self, message: Message) -> Message:
        """The start as it goes out: the visitor's cookies, the caching that fits it."""
        try:
            message = self._middleware._set_cookie(message, self._visitor, self._scope)
            if self._preview_cookie is not None:
                headers = [*message.get("headers", ()), self._preview_cookie]
                message = {**message, "headers": headers}
            visitor = self._visitor
            self._shown_to_visitor = (
                visitor._id is not None or bool(visitor._forced) or self._preview_cookie is not None
            )
            if self._middleware._private_responses:
                message = self._cache_safe(message)
        except Exception:
            self._rewrite = None
            logger.exception("optibase: could not finish the visitor; response unchanged")
        return message

    def _start_waits_for_blocks(self, inject: bool) -> bool:
        """Whether this page's blocks may still change its start: its cookie, its caching."""
        visitor = self._visitor
        if visitor._id is None:
            if not inject:
                return True  # nor is it known yet whether the page will be the visitor's
            visitor._load()  # the tag names the visitor: the page is theirs anyway
        if not self._may_assign or visitor._forced:
            return False
        assignments = visitor._assignments
        return any(test_id not in assignments for test_id in self._middleware.optibase._running())

    def _choose(self, test_id: str) -> str | None:
        """The variant whose blocks this page keeps for *test_id* (None: a test not configured)."""
        plan = self._middleware.optibase._plans.get(test_id)
        if plan is None:
            return None
        visitor = self._visitor
        shown_to_visitor = self._shown_to_visitor
        if shown_to_visitor is None and self._may_assign:
            variant = visitor._variant(plan)  # may assign, and send the exposure
        elif shown_to_visitor is not False:  # the visitor's own: the start will say private
            variant = visitor._variant(plan, may_assign=False)
        else:  # a response others may be served from a cache: what everyone sees
            variant = plan.test.shown_to_all
        return plan.variant_ids[0] if variant is None else variant

    def _make_injector(self) -> HtmlInjector:
        middleware, visitor = self._middleware, self._visitor
        nonce = middleware._csp_nonce
        if callable(nonce):
            nonce = nonce(self._scope)
        before, after = middleware._tag_parts(visitor)
        tag = before + visitor.id.encode() + after + script_tag_end(nonce)
        return HtmlInjector(tag, middleware._script_marker)

    def _cache_safe(self, message: Message) -> Message:
        visitor = self._visitor
        if visitor._forced or self._preview_cookie is not None:
            return {**message, "headers": not_stored(message.get("headers", ()))}
        if visitor._id is None:
            return message  # nothing about the visitor was used: the app's caching stands
        # A streamed rewrite's start keeps no ETag: the body is no longer the app's.
        drop_etag = self._rewrite is not None and self._held_start is None
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

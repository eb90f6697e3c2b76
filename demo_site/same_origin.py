"""Only pages of this server's own origin may change its state.

A page anywhere on the web can make the visitor's browser ``POST`` to
``http://127.0.0.1:8001/api/reset`` (a form, or a ``no-cors`` fetch): it cannot
read the answer, but the reset happens. The browser says where such a request
comes from, in ``Origin`` (on every request whose method is neither ``GET`` nor
``HEAD``) and in ``Sec-Fetch-Site``; a request with neither is not a page's
(curl, the library's own delivery, tests), so it is let through.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from demo_site.json_responses import RequestError, error_response

SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
_OTHER_SITES: Final = frozenset({"cross-site", "same-site"})


def _foreign(scope: Scope) -> bool:
    """Whether a browser says this request comes from a page of another origin."""
    headers = Headers(scope=scope)
    if headers.get("sec-fetch-site", "").lower() in _OTHER_SITES:
        return True
    origin = headers.get("origin")
    # A browser writes Origin as scheme://host[:port] and Host as host[:port], a default
    # port left out of both: a page of this origin sends the same; any other is elsewhere.
    own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
    return origin is not None and origin.lower() != own.lower()


class SameOriginWritesMiddleware:
    """Pure ASGI: a 403, before any handler runs, for a write a foreign page asked for.

    Any method but ``GET`` and ``HEAD`` counts as a write. ``same-site`` is
    refused too: the demo site on another port of 127.0.0.1 is same-site, and
    no page of it has anything to change here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and _foreign(scope):
            error = RequestError(403, "cross-origin request refused")
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

"""The demo site's strict Content-Security-Policy, with a fresh nonce per request.

The nonce also reaches the script tag Optibase injects, through
``Optibase(csp_nonce=csp_nonce)``: no ``'unsafe-inline'`` anywhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def csp_nonce(scope: Mapping[str, Any]) -> str | None:
    """The nonce :class:`CspNonceMiddleware` put in this request's scope (the ``csp_nonce=``)."""
    state = scope.get("state")
    return state.get("csp_nonce") if isinstance(state, Mapping) else None


def content_security_policy(nonce: str) -> str:
    """The policy sent with every response: scripts and styles only with *nonce*."""
    return (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}';"
        " img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none';"
        " object-src 'none'; frame-ancestors 'none'"
    )


class CspNonceMiddleware:
    """Pure ASGI: a fresh nonce per request in ``scope["state"]``, and the CSP header.

    Mount it outside :class:`OptibaseMiddleware`, so the nonce exists by the time
    the script tag is injected. Views read it as ``request.state.csp_nonce``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        # uvicorn gives each request its own copy of the lifespan state: safe to add to.
        scope.setdefault("state", {})["csp_nonce"] = nonce
        policy = content_security_policy(nonce).encode()

        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() != b"content-security-policy"
                ]
                headers.append((b"content-security-policy", policy))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_csp)

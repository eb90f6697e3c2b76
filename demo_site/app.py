"""The demo site: a tiny SaaS landing page running one A/B test with optibase_edge.

Paperplane (a made-up invoicing app) tests three headlines on its home page.
Everything the library does is visible here:

* ``/``: the headline test ``hero`` (three variants), rendered server-side in
  the view from ``get_visitor(request).variant("hero")``, so there is no flicker;
  the ``#signup`` button is a CLICK conversion (``signup``, one per visitor),
  detected by the script the middleware injects;
* ``/pricing``: a PAGE_VIEW conversion (``pricing``), with zero code;
* ``POST /buy``: the view calls ``await visitor.convert("purchase")``
  (PROGRAMMATIC), then redirects to ``/thanks``;
* every response carries a strict Content-Security-Policy whose per-request
  nonce reaches the injected ``<script>`` through ``csp_nonce=callable``.

Events go to ``segment_endpoint`` (the local sink in ``demo_site.sink`` when run
with ``python -m demo_site``), whose dashboard shows the results.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    Test,
    Variant,
    get_visitor,
)

__all__ = [
    "HEADLINES",
    "PLANS",
    "CspNonceMiddleware",
    "build_optibase",
    "create_demo_app",
    "csp_nonce",
]

TEST_ID: Final = "hero"
HEADLINES: Final[Mapping[str, str]] = {
    "control": "Invoicing that gets out of your way",
    "bold": "Get paid twice as fast",
    "social": "Trusted by 12,000 freelancers",
}
SUBLINES: Final[Mapping[str, str]] = {
    "control": "Send a polished invoice in under a minute, then get back to real work.",
    "bold": "Smart reminders and one-click card payments cut the wait from weeks to days.",
    "social": "Designers, developers and writers send their invoices with Paperplane.",
}
VARIANT_NAMES: Final[Mapping[str, str]] = {
    "control": "Calm (control)",
    "bold": "Bold promise",
    "social": "Social proof",
}
PLANS: Final[Mapping[str, tuple[str, int, str]]] = {
    "solo": ("Solo", 9, "One person, unlimited invoices."),
    "studio": ("Studio", 29, "Up to 5 people, reminders, card payments."),
    "agency": ("Agency", 79, "Unlimited seats, client portal, API."),
}
MAX_FORM_BYTES: Final = 4096


def build_optibase(
    *,
    segment_endpoint: str,
    write_key: str,
    secret_keys: Sequence[str],
    flush_interval: float = 0.2,
    **settings: Any,
) -> Optibase:
    """The demo's experiments and conversions, reporting to *segment_endpoint*."""
    return Optibase(
        tests=[
            Test(
                id=TEST_ID,
                name="Home page headline",
                variants=[Variant(v, name=VARIANT_NAMES[v]) for v in HEADLINES],
                pages=["/"],
            )
        ],
        conversions=[
            Conversion(
                id="signup",
                type=ConversionType.CLICK,
                selector="#signup",
                one_per_visitor=True,
                name="Clicked “Start free trial”",
            ),
            Conversion(
                id="pricing", type=ConversionType.PAGE_VIEW, url="/pricing", name="Saw pricing"
            ),
            Conversion(id="purchase", type=ConversionType.PROGRAMMATIC, name="Bought a plan"),
        ],
        secret_keys=list(secret_keys),
        segment_write_key=write_key,
        segment_endpoint=segment_endpoint,
        csp_nonce=csp_nonce,
        flush_interval=flush_interval,
        **settings,
    )


# --------------------------------------------------------------------------- CSP


def csp_nonce(scope: Mapping[str, Any]) -> str | None:
    """The nonce :class:`CspNonceMiddleware` put in this request's scope (the ``csp_nonce=``)."""
    state = scope.get("state")
    return state.get("csp_nonce") if isinstance(state, Mapping) else None


def content_security_policy(nonce: str) -> str:
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


# --------------------------------------------------------------------------- pages

_E = html.escape

_CSS: Final = """
:root { --ink: #14213d; --muted: #5b6475; --line: #e6e8ee; --brand: #3b5bdb;
        --brand-dark: #2f49b5; --bg: #fbfbfd; --accent: #fff4d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
a { color: var(--brand); }
.wrap { max-width: 980px; margin: 0 auto; padding: 0 24px; }
nav { display: flex; align-items: center; gap: 22px; padding: 18px 0; }
nav .logo { font-weight: 700; font-size: 19px; color: var(--ink); text-decoration: none;
            margin-right: auto; display: flex; align-items: center; gap: 8px; }
nav a { text-decoration: none; color: var(--muted); }
nav a:hover, nav a[aria-current] { color: var(--ink); }
.hero { padding: 64px 0 40px; text-align: center; }
.hero h1 { font-size: clamp(34px, 5vw, 52px); line-height: 1.1; margin: 0 0 18px;
           letter-spacing: -0.02em; }
.hero p.lead { font-size: 20px; color: var(--muted); max-width: 620px; margin: 0 auto 30px; }
.btn { display: inline-block; padding: 12px 22px; border-radius: 10px; font-weight: 600;
       text-decoration: none; border: 1px solid transparent; cursor: pointer; font-size: 16px;
       font-family: inherit; }
.btn-primary { background: var(--brand); color: #fff; }
.btn-primary:hover { background: var(--brand-dark); }
.btn-ghost { background: #fff; color: var(--ink); border-color: var(--line); }
.btn-ghost:hover { border-color: #c5cad6; }
.actions { display: flex; gap: 12px; justify-content: center; flex-wrap: wrap; }
.features { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr));
            gap: 16px; margin: 24px 0 40px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 20px; }
.card h3 { margin: 0 0 6px; font-size: 17px; }
.card p { margin: 0; color: var(--muted); font-size: 15px; }
.demo { background: var(--accent); border: 1px solid #f4dc9b; border-radius: 12px;
        padding: 16px 20px; margin: 0 0 48px; font-size: 14.5px; }
.demo h2 { font-size: 15px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .06em;
           color: #8a6100; }
.demo p { margin: 6px 0; }
.demo ul { margin: 6px 0; padding-left: 20px; }
.demo form { display: inline; }
.demo .links { margin-top: 10px; }
.demo button.link { background: none; border: 0; padding: 0; color: var(--brand);
                    text-decoration: underline; cursor: pointer; font: inherit; }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
       background: rgba(20, 33, 61, .06); padding: 1px 5px; border-radius: 4px; }
.page { padding: 48px 0; }
.page h1 { font-size: 36px; margin: 0 0 10px; letter-spacing: -0.01em; }
.page p.lead { color: var(--muted); font-size: 18px; margin: 0 0 28px; }
.plans { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 16px;
         margin-bottom: 36px; }
.plan .price { font-size: 34px; font-weight: 700; margin: 8px 0; }
.plan .price small { font-size: 15px; color: var(--muted); font-weight: 400; }
.plan p { min-height: 48px; }
.plan form { margin-top: 14px; }
.plan .btn { width: 100%; }
footer { border-top: 1px solid var(--line); color: var(--muted); font-size: 14px;
         padding: 20px 0 40px; }
"""

# A paper plane, inline (img-src allows data: URLs; no request, no 404 in the console).
_ICON: Final = "data:image/svg+xml," + quote(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
    '<path fill="#3b5bdb" d="M2 11.5 22 3l-6.5 18-4.2-7.3z"/>'
    '<path fill="#2f49b5" d="m11.3 13.7 4.2 7.3L13 14.5z"/></svg>'
)


def _layout(
    request: Request, title: str, body: str, *, dashboard_url: str, current: str = ""
) -> HTMLResponse:
    nonce = request.state.csp_nonce

    def link(href: str, label: str) -> str:
        mark = ' aria-current="page"' if href == current else ""
        return f'<a href="{href}"{mark}>{label}</a>'

    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_E(title)} · Paperplane</title>
<link rel="icon" href="{_ICON}">
<style nonce="{_E(nonce)}">{_CSS}</style>
</head>
<body>
<div class="wrap">
<nav>
<a class="logo" href="/"><img src="{_ICON}" width="22" height="22" alt="">Paperplane</a>
{link("/", "Home")}
{link("/pricing", "Pricing")}
<a href="{_E(dashboard_url)}" target="_blank" rel="noopener" id="dashboard-link">Results
dashboard ↗</a>
</nav>
{body}
<footer>Paperplane is a demo of <strong>optibase-edge</strong>: server-side A/B tests for
Starlette/FastAPI, reported to Segment from the server.</footer>
</div>
</body>
</html>
"""
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def create_demo_app(
    *,
    segment_endpoint: str,
    write_key: str,
    secret_keys: list[str],
    dashboard_url: str | None = None,
    flush_interval: float = 0.2,
    **optibase_settings: Any,
) -> Starlette:
    """The Paperplane demo site, reporting to the Segment-compatible *segment_endpoint*.

    *dashboard_url* defaults to the endpoint's root (the sink's dashboard).
    Extra keyword arguments are Optibase settings. The :class:`Optibase` is
    ``app.state.optibase``.
    """
    ob = build_optibase(
        segment_endpoint=segment_endpoint,
        write_key=write_key,
        secret_keys=secret_keys,
        flush_interval=flush_interval,
        **optibase_settings,
    )
    dashboard = dashboard_url or segment_endpoint.rstrip("/") + "/"
    cookie_name = ob.settings.cookie_name

    def render(request: Request, title: str, body: str, current: str = "") -> HTMLResponse:
        return _layout(request, title, body, dashboard_url=dashboard, current=current)

    async def home(request: Request) -> Response:
        visitor = get_visitor(request)
        # Chosen here, before any HTML is written: the page arrives already right.
        variant = visitor.variant(TEST_ID) or "control"
        body = f"""
<section class="hero">
<h1 id="headline" data-variant="{_E(variant)}">{_E(HEADLINES[variant])}</h1>
<p class="lead">{_E(SUBLINES[variant])}</p>
<div class="actions">
<a id="signup" class="btn btn-primary" href="/signup">Start free trial</a>
<a class="btn btn-ghost" href="/pricing">See pricing</a>
</div>
</section>
<section class="features">
<div class="card"><h3>One-minute invoices</h3><p>Pick a client, add lines, send. Taxes and
currencies are handled for you.</p></div>
<div class="card"><h3>Polite reminders</h3><p>Paperplane nudges late payers so you never
have to write that awkward email.</p></div>
<div class="card"><h3>Get paid by card</h3><p>Every invoice has a pay button. Money lands
in your account in two days.</p></div>
</section>
<aside class="demo" id="demo-panel">
<h2>Behind the scenes</h2>
<p>You are visitor <code id="visitor-id">{_E(visitor.id)}</code>, in variant
<code id="variant-id">{_E(variant)}</code> ({_E(VARIANT_NAMES[variant])}) of test
<code>{TEST_ID}</code>. Reload: the headline stays, because the assignment lives in a
signed cookie.</p>
<ul>
<li>Your first visit sent <em>Identify</em> and <em>Experiment Viewed</em> to Segment from the
server, once each; no tracking script was needed for that.</li>
<li>Clicking <strong>Start free trial</strong> sends one <em>Conversion Triggered</em>
(<code>signup</code>, CLICK, once per visitor).</li>
<li>Opening <a href="/pricing">Pricing</a> is a PAGE_VIEW conversion; buying a plan a
PROGRAMMATIC one.</li>
</ul>
<div class="links"><a href="{_E(dashboard)}" target="_blank" rel="noopener">Open the results
dashboard ↗</a> &nbsp;·&nbsp; <form method="post" action="/new-visitor"><button class="link"
type="submit" id="new-visitor">Become a new visitor</button></form> (to see another
headline)</div>
</aside>
"""
        return render(request, HEADLINES[variant], body, current="/")

    async def pricing(request: Request) -> Response:
        cards = "".join(
            f"""<div class="card plan">
<h3>{_E(name)}</h3>
<div class="price">${price}<small> / month</small></div>
<p>{_E(blurb)}</p>
<form method="post" action="/buy">
<input type="hidden" name="plan" value="{_E(plan_id)}">
<button class="btn {"btn-primary" if plan_id == "studio" else "btn-ghost"}" type="submit"
 id="buy-{_E(plan_id)}">Buy {_E(name)}</button>
</form>
</div>"""
            for plan_id, (name, price, blurb) in PLANS.items()
        )
        body = f"""
<section class="page">
<h1>Simple pricing</h1>
<p class="lead">Every plan starts with a 14-day free trial. Cancel any time.</p>
<div class="plans">{cards}</div>
<aside class="demo">
<h2>Behind the scenes</h2>
<p>Viewing this page fired the PAGE_VIEW conversion <code>pricing</code>: the middleware saw
the URL, no code in the view. <em>Buy</em> posts to <code>/buy</code>, whose view calls
<code>await visitor.convert("purchase")</code>.</p>
</aside>
</section>
"""
        return render(request, "Pricing", body, current="/pricing")

    async def signup(request: Request) -> Response:
        body = """
<section class="page">
<h1>Check your inbox</h1>
<p class="lead">We sent you a link to start your 14-day trial.</p>
<p><a class="btn btn-ghost" href="/">Back home</a></p>
<aside class="demo">
<h2>Behind the scenes</h2>
<p>The click on <code>#signup</code> was caught by the injected script and sent with
<code>navigator.sendBeacon</code>, which survives leaving the page. The server checked the
signed cookie and emitted <em>Conversion Triggered</em> (<code>signup</code>, CLICK). It is
one per visitor: clicking again sends nothing more.</p>
</aside>
</section>
"""
        return render(request, "Sign up", body)

    async def buy(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return PlainTextResponse("Form too large", status_code=413)
        form = parse_qs(raw.decode("utf-8", "replace"))
        plan = (form.get("plan") or [""])[0]
        if plan not in PLANS:
            return PlainTextResponse("Unknown plan", status_code=400)
        # (A real shop would charge the card here.)
        await get_visitor(request).convert("purchase")
        return RedirectResponse(f"/thanks?plan={plan}", status_code=303)

    async def thanks(request: Request) -> Response:
        plan = request.query_params.get("plan", "")
        name = PLANS[plan][0] if plan in PLANS else "Paperplane"
        body = f"""
<section class="page">
<h1>Thank you!</h1>
<p class="lead">Your <strong id="plan-name">{_E(name)}</strong> plan is ready.</p>
<p><a class="btn btn-primary" href="/">Back home</a></p>
<aside class="demo">
<h2>Behind the scenes</h2>
<p>The <code>/buy</code> view sent <em>Conversion Triggered</em> (<code>purchase</code>,
PROGRAMMATIC) before redirecting here, with the variants this visitor saw.</p>
</aside>
</section>
"""
        return render(request, "Thank you", body)

    async def new_visitor(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(cookie_name, path="/", httponly=True, samesite="lax")
        return response

    app = Starlette(
        routes=[
            Route("/", home, methods=["GET"]),
            Route("/pricing", pricing, methods=["GET"]),
            Route("/signup", signup, methods=["GET"]),
            Route("/buy", buy, methods=["POST"]),
            Route("/thanks", thanks, methods=["GET"]),
            Route("/new-visitor", new_visitor, methods=["POST"]),
        ],
        middleware=[
            # Outermost first: the nonce must exist before Optibase injects its tag.
            Middleware(CspNonceMiddleware),
            Middleware(OptibaseMiddleware, optibase=ob),
        ],
    )
    app.state.optibase = ob
    app.state.dashboard_url = dashboard
    return app

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

The test and conversions are defined in :mod:`demo_site.experiment`, the
policy in :mod:`demo_site.csp`, the pages' HTML in ``templates/``.  Events go
to ``segment_endpoint`` (the local sink in :mod:`demo_site.sink` when run with
``python -m demo_site``), whose dashboard shows the results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from demo_site.csp import CspNonceMiddleware
from demo_site.experiment import HEADLINES, SUBLINES, TEST_ID, VARIANT_NAMES, build_optibase
from demo_site.html_templates import escape as _E
from demo_site.html_templates import render
from optibase_edge import OptibaseMiddleware, get_visitor

PLANS: Final[Mapping[str, tuple[str, int, str]]] = {
    "solo": ("Solo", 9, "One person, unlimited invoices."),
    "studio": ("Studio", 29, "Up to 5 people, reminders, card payments."),
    "agency": ("Agency", 79, "Unlimited seats, client portal, API."),
}
"""Plan id: (name, dollars per month, blurb)."""
MAX_FORM_BYTES: Final = 4096


# A paper plane, inline (img-src allows data: URLs; no request, no 404 in the console).
_ICON: Final = "data:image/svg+xml," + quote(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">'
    '<path fill="#3b5bdb" d="M2 11.5 22 3l-6.5 18-4.2-7.3z"/>'
    '<path fill="#2f49b5" d="m11.3 13.7 4.2 7.3L13 14.5z"/></svg>'
)


def _page(
    request: Request, title: str, body: str, *, dashboard_url: str, current: str = ""
) -> HTMLResponse:
    """*body* (HTML) inside the site's layout; *current* is the nav link to mark."""

    def mark(href: str) -> str:
        return ' aria-current="page"' if href == current else ""

    page = render(
        "layout.html",
        title=_E(title),
        icon=_ICON,
        nonce=_E(request.state.csp_nonce),
        home_current=mark("/"),
        pricing_current=mark("/pricing"),
        dashboard_url=_E(dashboard_url),
        body=body,
    )
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

    def respond(request: Request, title: str, body: str, current: str = "") -> HTMLResponse:
        return _page(request, title, body, dashboard_url=dashboard, current=current)

    async def home(request: Request) -> Response:
        visitor = get_visitor(request)
        # Chosen here, before any HTML is written: the page arrives already right.
        variant = visitor.variant(TEST_ID) or "control"
        body = render(
            "home.html",
            variant=_E(variant),
            headline=_E(HEADLINES[variant]),
            subline=_E(SUBLINES[variant]),
            visitor_id=_E(visitor.id),
            variant_name=_E(VARIANT_NAMES[variant]),
            test_id=_E(TEST_ID),
            dashboard_url=_E(dashboard),
        )
        return respond(request, HEADLINES[variant], body, current="/")

    async def pricing(request: Request) -> Response:
        plans = "".join(
            render(
                "plan.html",
                plan_id=_E(plan_id),
                name=_E(name),
                price=price,
                blurb=_E(blurb),
                button_class="btn-primary" if plan_id == "studio" else "btn-ghost",
            )
            for plan_id, (name, price, blurb) in PLANS.items()
        )
        return respond(request, "Pricing", render("pricing.html", plans=plans), current="/pricing")

    async def signup(request: Request) -> Response:
        return respond(request, "Sign up", render("signup.html"))

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
        return respond(request, "Thank you", render("thanks.html", plan_name=_E(name)))

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
    return app

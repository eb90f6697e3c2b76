"""The sink's dashboard: the local results of the site's experiments, kept live, and the raw calls.

``GET /`` (``dashboard``) is the page: the results fragment
(:func:`demo_site.results_html.results_html`), then the raw calls, collapsed.
``GET /results`` (``results_fragment``) is that same fragment on its own: the
page's script polls ``/api/calls`` for the feed and, when calls arrive,
fetches the fragment and swaps it in, so one renderer, on the server, draws
the results both times.

The page's stylesheet and script are static files (``static/dashboard.css``,
``static/dashboard.js``) loaded under a strict CSP that allows only this
response's nonce. Every stored string is escaped, so hostile event data shows
as text.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from demo_site.html_templates import escape as _e
from demo_site.html_templates import render
from demo_site.json_responses import NO_STORE_HEADERS, JSONValue
from demo_site.results_html import results_html
from demo_site.sink_results import StoredResults

FEED_ROWS: Final = 50
"""Calls pre-rendered in the live feed (dashboard.js keeps as many: data-max-rows)."""

# The fragment holds no script or style: nothing at all may load if it is opened on its own.
_FRAGMENT_CSP: Final = (
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _page_csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}';"
        " connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    )


def _compact_json(value: JSONValue) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _feed_row(call: Mapping[str, Any]) -> str:
    received = str(call.get("received_at") or "")
    detail = call.get("properties") if call.get("properties") is not None else call.get("traits")
    return (
        f"<tr{' class=dup' if call.get('duplicate') else ''}>"
        f'<td class="num">{_e(call["id"])}</td>'
        f'<td title="{_e(received)}">{_e(received[11:19])}</td>'
        f"<td>{_e(call.get('type') or '')}</td>"
        f"<td>{_e(call.get('event') or '')}</td>"
        f"<td><code>{_e(call.get('anonymous_id') or '', 40)}</code></td>"
        f"<td><code>{_e(call.get('user_id') or '', 40)}</code></td>"
        f"<td><code>{_e(call.get('message_id') or '', 40)}</code></td>"
        f'<td class="props"><code>{_e(_compact_json(detail), 120)}</code></td></tr>'
    )


def _results_fragment(results: StoredResults) -> str:
    return results_html(results.compute())


def _dashboard_html(results: StoredResults, *, nonce: str, urls: Mapping[str, str]) -> str:
    store = results.store
    # The feed first: results computed afterwards count at least every call the page's
    # script will not fetch again (those up to `after`), so none is missed.
    latest = store.latest(FEED_ROWS)
    after = max((int(call["id"]) for call in latest), default=0)
    rows = store.count(up_to=after)  # the script adds those it fetches
    feed_rows = "".join(_feed_row(call) for call in latest) or (
        '<tr id="feed-empty"><td colspan="8" class="empty">No calls yet.</td></tr>'
    )
    return render(
        "dashboard.html",
        nonce=nonce,
        stylesheet_url=_e(urls["stylesheet"]),
        script_url=_e(urls["script"]),
        results_url=_e(urls["results"]),
        results=_results_fragment(results),
        rows=rows,
        after=after,
        max_rows=FEED_ROWS,
        calls_url=_e(urls["calls"]),
        feed_rows=feed_rows,
    )


def dashboard_routes(results: StoredResults) -> list[Route]:
    """``GET /`` (``dashboard``) and ``GET /results`` (``results_fragment``), showing *results*.

    Need the routes named ``calls`` (the feed's JSON) and ``static`` (a mount
    serving ``dashboard.css`` and ``dashboard.js``) in the same app.
    """

    async def dashboard(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        urls = {
            "calls": request.url_for("calls").path,
            "results": request.url_for("results_fragment").path,
            "stylesheet": request.url_for("static", path="dashboard.css").path,
            "script": request.url_for("static", path="dashboard.js").path,
        }
        page = await run_in_threadpool(_dashboard_html, results, nonce=nonce, urls=urls)
        return HTMLResponse(
            page, headers={**NO_STORE_HEADERS, "Content-Security-Policy": _page_csp(nonce)}
        )

    async def results_fragment(request: Request) -> Response:
        fragment = await run_in_threadpool(_results_fragment, results)
        return HTMLResponse(
            fragment, headers={**NO_STORE_HEADERS, "Content-Security-Policy": _FRAGMENT_CSP}
        )

    return [
        Route("/", dashboard, methods=["GET"], name="dashboard"),
        Route("/results", results_fragment, methods=["GET"], name="results_fragment"),
    ]

"""The sink's dashboard, ``GET /``: A/B results per test, with SVG charts, and a live feed.

The page is rendered on the server from ``templates/dashboard.html``; its
stylesheet and script are static files (``static/dashboard.css``,
``static/dashboard.js``) loaded under a strict CSP that allows only this
response's nonce.  Every stored string is escaped, so hostile event data shows
as text.  The script polls ``/api/calls`` to prepend new calls to the feed.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from demo_site.ab_results import compute_results
from demo_site.call_store import CallStore
from demo_site.html_templates import render
from demo_site.json_responses import JSONValue

FEED_ROWS: Final = 50
"""Calls pre-rendered in the live feed (dashboard.js keeps as many)."""

_UNSAFE_CHARS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_PALETTE: Final = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")


def _e(value: object, limit: int | None = None) -> str:
    """Escape any value for HTML text or a quoted attribute (also inside inline SVG)."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(_UNSAFE_CHARS.sub("\ufffd", text), quote=True)


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _short_json(value: JSONValue, limit: int = 120) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg_chart(test: Mapping[str, Any], conversion_ids: Sequence[str]) -> str:
    """A horizontal bar chart of conversion rate per variant, grouped by conversion id."""
    variants: list[Mapping[str, Any]] = list(test["variants"])
    if not variants or not conversion_ids:
        return ""
    rates = [v["conversions"][cid]["rate"] or 0.0 for v in variants for cid in conversion_ids]
    scale = max(rates) or 1.0
    width, label_w, bar_x, bar_w = 660, 150, 160, 360
    row_h, bar_h, head_h, gap = 20, 14, 22, 8
    height = len(conversion_ids) * (head_h + len(variants) * row_h + gap) + 24
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img"'
        f' aria-label="{_e("Conversion rate by variant for test " + str(test["test_id"]))}">'
    ]
    y = 0
    for cid in conversion_ids:
        parts.append(f'<text class="group" x="0" y="{y + 15}">{_e(cid, 60)}</text>')
        y += head_h
        for index, variant in enumerate(variants):
            stats = variant["conversions"][cid]
            rate = stats["rate"]
            length = round(bar_w * (rate or 0.0) / scale, 1)
            color = _PALETTE[index % len(_PALETTE)]
            tip = (
                f"{variant['variant_id']} · {cid}: {stats['visitors']} / "
                f"{variant['exposed']} = {_percent(rate)}"
            )
            parts.append(
                f"<g><title>{_e(tip)}</title>"
                f'<text class="label" x="{label_w}" y="{y + 12}" text-anchor="end">'
                f"{_e(variant['variant_id'], 22)}</text>"
                f'<rect x="{bar_x}" y="{y + 1}" width="{length}" height="{bar_h}" rx="2"'
                f' fill="{color}"/>'
                f'<text class="value" x="{bar_x + length + 6}" y="{y + 12}">'
                f"{_e(_percent(rate))} ({stats['visitors']}/{variant['exposed']})</text></g>"
            )
            y += row_h
        y += gap
    parts.append(
        f'<line class="axis" x1="{bar_x}" y1="{y}" x2="{bar_x + bar_w}" y2="{y}"/>'
        f'<text class="tick" x="{bar_x}" y="{y + 16}">0%</text>'
        f'<text class="tick" x="{bar_x + bar_w}" y="{y + 16}" text-anchor="end">'
        f"{_e(_percent(scale))}</text></svg>"
    )
    return "".join(parts)


def _results_html(results: Mapping[str, Any]) -> str:
    tests: list[Mapping[str, Any]] = results["tests"]
    conversion_ids: list[str] = results["conversion_ids"]
    if not tests:
        return (
            '<p class="empty">No experiment data yet. “Experiment Viewed” and '
            "“Conversion Triggered” tracks show up here.</p>"
        )
    out: list[str] = []
    for test in tests:
        head = "".join(f'<th class="num">{_e(cid, 40)}</th>' for cid in conversion_ids)
        rows = []
        for variant in test["variants"]:
            stats = variant["conversions"]
            cells = "".join(
                f'<td class="num">{stats[cid]["visitors"]}'
                f' <span class="rate">{_e(_percent(stats[cid]["rate"]))}</span></td>'
                for cid in conversion_ids
            )
            rows.append(
                f'<tr><th scope="row"><code>{_e(variant["variant_id"], 60)}</code></th>'
                f'<td class="num">{variant["exposed"]}</td>{cells}</tr>'
            )
        out.append(
            f'<article class="test"><h3>Test <code>{_e(test["test_id"], 80)}</code></h3>'
            f'<table class="results"><thead><tr><th>Variant</th><th class="num">Exposed</th>'
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"{_svg_chart(test, conversion_ids)}</article>"
        )
    return "".join(out)


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
        f'<td class="props"><code>{_e(_short_json(detail))}</code></td></tr>'
    )


def _dashboard_html(
    store: CallStore, *, calls_url: str, stylesheet_url: str, script_url: str, nonce: str
) -> str:
    results = compute_results(store.ab_tracks())
    latest = store.latest(FEED_ROWS)
    rows, distinct = store.counts()
    after = max((int(call["id"]) for call in latest), default=0)
    feed_rows = "".join(_feed_row(call) for call in latest) or (
        '<tr id="feed-empty"><td colspan="8" class="empty">No calls yet.</td></tr>'
    )
    return render(
        "dashboard.html",
        nonce=nonce,
        stylesheet_url=_e(stylesheet_url),
        script_url=_e(script_url),
        rows=rows,
        distinct=distinct,
        duplicates=rows - distinct,
        results=_results_html(results),
        after=after,
        calls_url=_e(calls_url),
        feed_rows=feed_rows,
    )


def dashboard_route(store: CallStore) -> Route:
    """``GET /`` (named ``dashboard``), showing *store*.

    Needs the routes named ``calls`` (the feed's JSON) and ``static`` (a mount
    serving ``dashboard.css`` and ``dashboard.js``) in the same app.
    """

    async def dashboard(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        page = await run_in_threadpool(
            _dashboard_html,
            store,
            calls_url=request.url_for("calls").path,
            stylesheet_url=request.url_for("static", path="dashboard.css").path,
            script_url=request.url_for("static", path="dashboard.js").path,
            nonce=nonce,
        )
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}';"
            " connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none';"
            " frame-ancestors 'none'"
        )
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": csp,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return Route("/", dashboard, methods=["GET"], name="dashboard")

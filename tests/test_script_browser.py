"""The client script (optibase_edge/static/optibase.js) in a real headless Chromium.

A tiny Starlette app serves the real script (config token replaced), pages
carrying the tag the middleware injects, and a collect endpoint that records
what the browser actually delivered. Kept synchronous: Playwright's sync API
cannot run inside a running asyncio loop.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.support.polling import wait_until
from tests.support.server import serve

SCRIPT_PATH = Path(__file__).resolve().parents[1] / "optibase_edge" / "static" / "optibase.js"
TOKEN = "__OPTIBASE_CONFIG__"
VISITOR = "0b7c3c2e-5f1a-4a7e-9d7e-3f2b1c0d9e8a"
VARIANTS = [
    {"test_id": "hero", "variant_id": "bold"},
    {"test_id": "pricing", "variant_id": "control"},
]
MAPPED = [
    {"userFriendlyTestId": "hero", "userFriendlyVariantId": "bold"},
    {"userFriendlyTestId": "pricing", "userFriendlyVariantId": "control"},
]
FETCHED_VISITOR = "visitor-from-endpoint"
FETCHED_VARIANTS = [{"test_id": "checkout", "variant_id": "one-page"}]
CONFIG = {
    "collectUrl": "/_optibase/collect",
    "variantsUrl": "/_optibase/variants",
    "clicks": [
        {"id": "signup", "selector": "#cta"},
        # Invalid selector: must be skipped without breaking the other ones.
        {"id": "broken", "selector": "[[nope"},
        # Same id as the data attribute on .promo: still one beacon per click.
        {"id": "promo", "selector": ".promo"},
        {"id": "both-config", "selector": "#both"},
    ],
}
SETTLE = 0.3  # after the expected beacons arrive, time for unexpected extras to show up


def script_tag(*, data: bool = True, nonce: str | None = None) -> str:
    """The tag exactly as the middleware injects it."""
    attrs = ['src="/_optibase/script.js?v=test"']
    if data:
        attrs.append(f'data-optibase-visitor="{VISITOR}"')
        variants = json.dumps(VARIANTS, separators=(",", ":"))
        attrs.append(f'data-optibase-variants="{html.escape(variants, quote=True)}"')
    attrs.append("defer")
    if nonce:
        attrs.append(f'nonce="{nonce}"')
    return f"<script {' '.join(attrs)}></script>"


BODY = """
<a id="cta" href="/next">Sign up</a>
<button class="promo" data-optibase-conversion-id="promo"><span id="inner">inner</span></button>
<button id="both" data-optibase-conversion-id="both-attr">Both</button>
<p id="nothing">Nothing to see</p>
<div id="stopper"><button id="stopped" data-optibase-conversion-id="stopped">Stop</button></div>
"""


def page_html(head: str, body: str = BODY) -> str:
    return f"<!doctype html><html><head><title>t</title>{head}</head><body>{body}</body></html>"


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def wait(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait for ``count`` records, then a short settle to catch duplicates."""
        wait_until(
            lambda: len(self.snapshot()) >= count,
            lambda: f"{count} beacon(s); got {self.snapshot()!r}",
            timeout=timeout,
        )
        time.sleep(SETTLE)
        return self.snapshot()


def make_app(recorder: Recorder) -> Starlette:
    source = SCRIPT_PATH.read_text(encoding="utf-8")
    script = source.replace(TOKEN, json.dumps(CONFIG))

    async def script_js(request: Request) -> Response:
        return Response(script, media_type="text/javascript")

    async def early_js(request: Request) -> Response:
        # Runs right after the script, before the (delayed) variants fetch
        # resolves: a throwing listener first, then a recording one.
        body = """
window.__early = {before: window.optibaseActiveVariants === undefined, calls: []};
window.optibaseAddActiveVariantsListener(function () { throw new Error("listener boom"); });
window.optibaseAddActiveVariantsListener(function (v) { window.__early.calls.push(v); });
"""
        return Response(body, media_type="text/javascript")

    async def stopper_js(request: Request) -> Response:
        # A page handler that stops the click from bubbling up to document.
        body = """
document.getElementById("stopper").addEventListener("click", function (e) {
  e.stopPropagation();
});
"""
        return Response(body, media_type="text/javascript")

    async def home(request: Request) -> Response:
        return HTMLResponse(page_html(script_tag() + '<script src="/stopper.js" defer></script>'))

    async def plain(request: Request) -> Response:
        head = script_tag(data=False) + '<script src="/early.js" defer></script>'
        return HTMLResponse(page_html(head))

    csp = "default-src 'self'; script-src 'nonce-abc'"

    async def csp_page(request: Request) -> Response:
        return HTMLResponse(
            page_html(script_tag(nonce="abc")), headers={"Content-Security-Policy": csp}
        )

    async def csp_control(request: Request) -> Response:
        # Proves the policy is enforced and violations are observed.
        head = "<script>window.__inlineRan = true;</script>"
        return HTMLResponse(page_html(head), headers={"Content-Security-Policy": csp})

    async def twice(request: Request) -> Response:
        body = '<button id="cta">Sign up</button>'
        return HTMLResponse(page_html(script_tag() + script_tag(), body))

    async def next_page(request: Request) -> Response:
        return HTMLResponse(page_html("", "<h1>next</h1>"))

    async def variants(request: Request) -> Response:
        await asyncio.sleep(0.2)  # leaves time for listeners registered before load
        return JSONResponse({"visitor_id": FETCHED_VISITOR, "variants": FETCHED_VARIANTS})

    async def collect(request: Request) -> Response:
        raw = await request.body()
        recorder.add(
            {
                "content_type": request.headers.get("content-type", ""),
                "body": json.loads(raw),
            }
        )
        return Response(status_code=204)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # a 404 would show up as a console error

    return Starlette(
        routes=[
            Route("/", home),
            Route("/plain", plain),
            Route("/csp", csp_page),
            Route("/csp-control", csp_control),
            Route("/twice", twice),
            Route("/next", next_page),
            Route("/early.js", early_js),
            Route("/stopper.js", stopper_js),
            Route("/favicon.ico", favicon),
            Route("/_optibase/script.js", script_js),
            Route("/_optibase/variants", variants),
            Route("/_optibase/collect", collect, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with serve(make_app(recorder)) as base_url:
        yield base_url, recorder


@pytest.fixture
def base_url(site: tuple[str, Recorder]) -> str:
    return site[0]


@pytest.fixture
def beacons(site: tuple[str, Recorder]) -> Recorder:
    site[1].clear()
    return site[1]


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.optibaseActiveVariants !== undefined")


def click_event(url: str, conversion_id: str) -> dict[str, str]:
    return {"type": "click", "conversion_id": conversion_id, "url": url, "referrer": ""}


LATE_LISTENER = """() => new Promise((resolve) => {
  let sync = true;
  window.optibaseAddActiveVariantsListener((v) => resolve({variants: v, sync: sync}));
  sync = false;
})"""


def test_script_file_has_one_config_token_and_is_small() -> None:
    source = SCRIPT_PATH.read_text(encoding="utf-8")
    assert source.count(TOKEN) == 1
    assert len(source.encode()) <= 4096


def test_injected_data_exposes_variants_and_late_listener(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/")
    assert page.evaluate("window.optibaseActiveVariants") == MAPPED
    assert page.evaluate("window.optibaseTestedUserId") == VISITOR
    result = page.evaluate(LATE_LISTENER)
    assert result == {"variants": MAPPED, "sync": False}  # called, and asynchronously
    assert beacons.snapshot() == []  # loading the page alone reports nothing
    assert errors == []


def test_link_click_navigating_away_still_delivers_one_beacon(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/")
    page.click("#cta")
    page.wait_for_url(base_url + "/next")
    records = beacons.wait(1)
    assert [r["body"] for r in records] == [click_event(base_url + "/", "signup")]
    assert records[0]["content_type"].startswith("application/json")
    assert errors == []


def test_referrer_is_reported(page: Any, base_url: str, beacons: Recorder) -> None:
    page.goto(base_url + "/", referer=base_url + "/from")
    page.wait_for_function("window.optibaseActiveVariants !== undefined")
    page.click("#inner")
    assert beacons.wait(1)[0]["body"]["referrer"] == base_url + "/from"


def test_click_on_inner_span_uses_data_attribute_via_send_beacon(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    page.add_init_script(
        "const real = navigator.sendBeacon.bind(navigator); window.__beaconCalls = 0;"
        "navigator.sendBeacon = function (u, d) { window.__beaconCalls++; return real(u, d); };"
    )
    open_page(page, base_url + "/")
    page.click("#inner")
    records = beacons.wait(1)
    # .promo also matches a configured selector with the same id: still one beacon.
    assert [r["body"] for r in records] == [click_event(base_url + "/", "promo")]
    assert page.evaluate("window.__beaconCalls") == 1
    assert errors == []


def test_element_matching_selector_and_attribute_sends_one_beacon_per_id(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/")
    page.click("#both")
    records = beacons.wait(2)
    assert sorted(r["body"]["conversion_id"] for r in records) == ["both-attr", "both-config"]
    assert {r["body"]["type"] for r in records} == {"click"}
    assert errors == []


def test_unrelated_click_and_text_node_target(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/")
    page.click("#nothing")
    # Synthetic click whose target is a text node, not an Element.
    page.evaluate(
        "document.getElementById('inner').firstChild"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    records = beacons.wait(1)
    assert [r["body"] for r in records] == [click_event(base_url + "/", "promo")]
    assert errors == []


def test_click_stopped_by_page_handler_is_still_seen(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/")
    page.click("#stopped")
    records = beacons.wait(1)
    assert [r["body"] for r in records] == [click_event(base_url + "/", "stopped")]
    assert errors == []


def test_programmatic_conversion(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/")
    page.evaluate("window.optibaseSendConversionEvent('purchase')")
    records = beacons.wait(1)
    assert [r["body"] for r in records] == [
        {"type": "conversion", "conversion_id": "purchase", "url": base_url + "/", "referrer": ""}
    ]
    assert records[0]["content_type"].startswith("application/json")
    assert errors == []


def test_strict_csp_with_nonce(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/csp")
    assert page.evaluate("window.optibaseActiveVariants") == MAPPED
    assert page.evaluate(LATE_LISTENER)["variants"] == MAPPED
    page.click("#inner")
    page.evaluate("window.optibaseSendConversionEvent('purchase')")
    records = beacons.wait(2)
    assert sorted((r["body"]["type"], r["body"]["conversion_id"]) for r in records) == [
        ("click", "promo"),
        ("conversion", "purchase"),
    ]
    assert page.evaluate("window.__violations") == []
    assert errors == []


def test_csp_control_page_detects_violations(page: Any, base_url: str) -> None:
    page.goto(base_url + "/csp-control")
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__inlineRan") is None


def test_script_included_twice_counts_once(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/twice")
    page.click("#cta")
    page.evaluate("window.optibaseSendConversionEvent('purchase')")
    records = beacons.wait(2)
    assert sorted(r["body"]["conversion_id"] for r in records) == ["purchase", "signup"]
    assert page.evaluate("window.optibaseActiveVariants") == MAPPED
    assert errors == []


def test_tag_without_data_fetches_variants(
    page: Any, base_url: str, beacons: Recorder, errors: list[str]
) -> None:
    open_page(page, base_url + "/plain")
    mapped = [{"userFriendlyTestId": "checkout", "userFriendlyVariantId": "one-page"}]
    assert page.evaluate("window.optibaseActiveVariants") == mapped
    assert page.evaluate("window.optibaseTestedUserId") == FETCHED_VISITOR
    # Registered before the variants arrived; the throwing listener before it
    # did not stop it (nor surface as a page error).
    page.wait_for_function("window.__early.calls.length > 0")
    assert page.evaluate("window.__early") == {"before": True, "calls": [mapped]}
    assert page.evaluate(LATE_LISTENER) == {"variants": mapped, "sync": False}
    page.click("#inner")
    assert [r["body"]["conversion_id"] for r in beacons.wait(1)] == ["promo"]
    assert errors == []


@pytest.mark.parametrize(
    "beacon_patch",
    [
        "delete Navigator.prototype.sendBeacon;",
        "navigator.sendBeacon = function () { return false; };",
    ],
    ids=["sendBeacon-missing", "sendBeacon-false"],
)
def test_keepalive_fetch_fallback_survives_navigation(
    page: Any, base_url: str, beacons: Recorder, errors: list[str], beacon_patch: str
) -> None:
    page.add_init_script(beacon_patch)
    # Loopback is too fast to prove keepalive by losing a request, so record the
    # fetch options where they survive the navigation: sessionStorage.
    page.add_init_script(
        "const realFetch = window.fetch;"
        "window.fetch = function (url, init) {"
        "  if (init && init.method === 'POST') sessionStorage.setItem('fetchInit', JSON.stringify("
        "    {url: url, keepalive: init.keepalive, credentials: init.credentials,"
        "     headers: init.headers}));"
        "  return realFetch.apply(this, arguments); };"
    )
    open_page(page, base_url + "/")
    page.click("#cta")
    page.wait_for_url(base_url + "/next")
    records = beacons.wait(1)
    assert [r["body"] for r in records] == [click_event(base_url + "/", "signup")]
    assert records[0]["content_type"].startswith("application/json")
    assert json.loads(page.evaluate("sessionStorage.getItem('fetchInit')")) == {
        "url": "/_optibase/collect",
        "keepalive": True,
        "credentials": "same-origin",
        "headers": {"Content-Type": "application/json"},
    }
    assert errors == []

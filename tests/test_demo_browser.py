"""The demo in a real headless Chromium: variants, the signup click, CSP, the dashboard.

The site and the sink run under real uvicorn on 127.0.0.1 (as in
tests/test_demo.py); the only addition is a pass-through ASGI wrapper counting
the collector's answers, so a test knows when the browser's beacon was handled.
The last tests attack a sink of their own from hostile pages.
Kept synchronous: Playwright's sync API cannot run inside a running asyncio loop.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo_site.experiment import HEADLINES
from demo_site.sink import create_sink_app
from tests.support.browser import CHROMIUM_ARGS, CHROMIUM_PATH
from tests.support.dashboard import READ_RESULTS_JS, view, views_from_json
from tests.support.polling import wait_until
from tests.support.server import serve
from tests.test_demo import (
    DEADLINE,
    SETTLE,
    USER_AGENT,
    WRITE_KEY,
    Demo,
    conversions,
    run_demo,
    sink_calls,
    tracks,
    wait_for_calls,
)

SCRIPT_READY = "window.optibaseActiveVariants !== undefined"


class CollectCounter:
    """Pass-through ASGI wrapper: the statuses the collector answered, in order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._statuses: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/_optibase/collect":
            await self.app(scope, receive, send)
            return

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                with self._lock:
                    self._statuses.append(message["status"])
            await send(message)

        await self.app(scope, receive, record)

    def statuses(self) -> list[int]:
        with self._lock:
            return list(self._statuses)

    def wait(self, count: int) -> list[int]:
        def enough() -> list[int] | None:
            statuses = self.statuses()
            return statuses if len(statuses) >= count else None

        return wait_until(enough, f"{count} collector request(s)", timeout=DEADLINE)


@pytest.fixture(scope="module")
def demo_and_counter(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Demo, CollectCounter]]:
    counters: list[CollectCounter] = []

    def wrap(app: ASGIApp) -> CollectCounter:
        counters.append(CollectCounter(app))
        return counters[0]

    with run_demo(tmp_path_factory.mktemp("demo") / "sink.sqlite3", wrap) as running:
        yield running, counters[0]


@pytest.fixture
def demo(demo_and_counter: tuple[Demo, CollectCounter]) -> Demo:
    return demo_and_counter[0]


@pytest.fixture
def collected(demo_and_counter: tuple[Demo, CollectCounter]) -> CollectCounter:
    """Counts from this test on (a fresh browser context is a fresh visitor anyway)."""
    counter = demo_and_counter[1]
    with counter._lock:
        counter._statuses.clear()
    return counter


def open_page(page: Any, url: str) -> Any:
    response = page.goto(url)
    assert response is not None and response.ok, url
    page.wait_for_function(SCRIPT_READY)
    return response


def headline(page: Any) -> tuple[str, str]:
    element = page.locator("#headline")
    return element.get_attribute("data-variant"), element.inner_text()


def assert_clean(page: Any, errors: list[str]) -> None:
    assert page.evaluate("window.__violations") == []
    assert errors == []


def test_variant_is_stable_and_matches_the_server(page: Any, demo: Demo, errors: list[str]) -> None:
    open_page(page, demo.site_url + "/")
    variant, text = headline(page)
    assert text == HEADLINES[variant]
    for _ in range(3):
        page.reload()
        page.wait_for_function(SCRIPT_READY)
        assert headline(page) == (variant, text)

    # The browser, the server and the sink agree on the assignment.
    server = page.context.request.get(demo.site_url + "/_optibase/variants").json()
    assert server["variants"] == [{"test_id": "hero", "variant_id": variant}]
    visitor_id = server["visitor_id"]
    assert page.evaluate("window.optibaseActiveVariants") == [
        {"userFriendlyTestId": "hero", "userFriendlyVariantId": variant}
    ]
    assert page.evaluate("window.optibaseTestedUserId") == visitor_id
    assert page.locator("#visitor-id").inner_text() == visitor_id
    calls = wait_for_calls(
        demo.sink_url,
        visitor_id,
        lambda c: bool(tracks(c, "Experiment Viewed")),
        "Experiment Viewed",
    )
    time.sleep(SETTLE)  # four page loads: still one Identify and one Experiment Viewed
    calls = sink_calls(demo.sink_url, visitor_id)
    [viewed] = tracks(calls, "Experiment Viewed")
    assert viewed["properties"]["variant_id"] == variant
    assert [c["type"] for c in calls] == ["identify", "track"]
    assert viewed["context"]["userAgent"] == USER_AGENT
    assert_clean(page, errors)


def test_signup_click_converts_once_per_visitor(
    page: Any, demo: Demo, collected: CollectCounter, errors: list[str]
) -> None:
    home = demo.site_url + "/"
    open_page(page, home)
    variant, _ = headline(page)
    visitor_id = page.locator("#visitor-id").inner_text()

    # The link navigates away at once; the beacon must still arrive.
    page.click("#signup")
    page.wait_for_url(demo.site_url + "/signup")
    calls = wait_for_calls(
        demo.sink_url, visitor_id, lambda c: bool(conversions(c, "signup")), "signup"
    )
    [signup] = conversions(calls, "signup")
    assert signup["properties"] == {
        "conversion_id": "signup",
        "conversion_type": "CLICK",
        "origin_url": home,
        "variants": [{"test_id": "hero", "variant_id": variant}],
    }
    assert signup["context"]["page"]["url"] == home
    assert collected.wait(1) == [204]
    assert_clean(page, errors)

    # Back, and click again: the beacon is sent and accepted, and nothing more is reported.
    page.go_back()
    page.wait_for_url(home)
    page.wait_for_function(SCRIPT_READY)
    page.click("#signup")
    page.wait_for_url(demo.site_url + "/signup")
    assert collected.wait(2) == [204, 204]
    # A later event through the same queue, then a settle: the queue is past the second click.
    page.goto(demo.site_url + "/pricing")
    wait_for_calls(demo.sink_url, visitor_id, lambda c: bool(conversions(c, "pricing")), "pricing")
    time.sleep(SETTLE)
    assert len(conversions(sink_calls(demo.sink_url, visitor_id), "signup")) == 1
    assert_clean(page, errors)


def test_strict_csp_with_a_nonce_on_every_page(
    page: Any, demo: Demo, collected: CollectCounter, errors: list[str]
) -> None:
    nonces = []
    for path in ("/", "/pricing", "/signup", "/"):
        response = open_page(page, demo.site_url + path)
        policy = response.headers["content-security-policy"]
        match = re.search(r"script-src 'nonce-([^']+)';", policy)
        assert match, policy
        assert "unsafe-inline" not in policy
        nonces.append(match[1])
        # The injected tag got this response's nonce (the property: the attribute is hidden).
        tag_nonce = page.evaluate(
            "document.querySelector('script[src^=\"/_optibase/script.js\"]').nonce"
        )
        assert tag_nonce == match[1]
        assert_clean(page, errors)
    assert len(set(nonces)) == len(nonces), "a fresh nonce per response"

    # The rest of the flow under the same policy: a click beacon, a form post.
    open_page(page, demo.site_url + "/")
    page.click("#signup")
    page.wait_for_url(demo.site_url + "/signup")
    assert collected.wait(1) == [204]
    open_page(page, demo.site_url + "/pricing")
    page.click("#buy-studio")
    page.wait_for_url(demo.site_url + "/thanks?plan=studio")
    page.wait_for_function(SCRIPT_READY)
    assert page.locator("#plan-name").inner_text() == "Studio"
    assert_clean(page, errors)

    # Control: the policy is enforced, and a violation would have been seen.
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__inline = true'; document.head.appendChild(s); }"
    )
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__inline") is None


def test_dashboard_shows_the_signup(page: Any, demo: Demo, errors: list[str]) -> None:
    open_page(page, demo.site_url + "/")
    variant, _ = headline(page)
    visitor_id = page.locator("#visitor-id").inner_text()
    page.click("#signup")
    page.wait_for_url(demo.site_url + "/signup")
    wait_for_calls(demo.sink_url, visitor_id, lambda c: bool(conversions(c, "signup")), "signup")
    assert_clean(page, errors)

    # The site's own link opens the dashboard.
    with page.expect_popup() as popup:
        page.click("#dashboard-link")
    dashboard = popup.value
    dashboard.wait_for_load_state()
    assert dashboard.url == demo.sink_url + "/"
    hero = view(views_from_json(dashboard.evaluate(READ_RESULTS_JS)), "hero")
    row = hero.table("signup").row(variant)
    assert int(row.cells["visitors"].value) >= 1, row
    assert int(row.cells["converted"].value) >= 1, row
    dashboard.click("#raw-calls summary")  # the raw calls, collapsed under the results
    assert visitor_id in dashboard.locator("#feed-body").inner_text()
    dashboard.wait_for_function(
        "document.getElementById('feed-status').textContent === 'live'",
        timeout=DEADLINE * 1000,
    )


# --------------------------------------------------------------------------- hostile pages

HOSTILE_NAME = "evil.example"

# Submits a form like a page's own script would, from wherever the page is.
POST_FORM = """([action, enctype, name, value]) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.action = action;
  form.enctype = enctype;
  const field = document.createElement("input");
  field.name = name;
  field.value = value;
  form.append(field);
  document.body.append(form);
  form.submit();
}"""


@pytest.fixture(scope="module")
def rebinding_browser(browser: Any) -> Iterator[Any]:
    """Chromium for which evil.example is 127.0.0.1: where a DNS rebinding attack ends up."""
    rebound = browser.browser_type.launch(
        executable_path=CHROMIUM_PATH,
        headless=True,
        args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HOSTILE_NAME} 127.0.0.1"],
    )
    yield rebound
    rebound.close()


@pytest.fixture
def sink_url(tmp_path: Path) -> Iterator[str]:
    """A sink of the demo's own, holding one visitor's call."""
    with serve(create_sink_app(str(tmp_path / "sink.sqlite3"), write_key=WRITE_KEY)) as url:
        message = {"type": "identify", "anonymousId": "victim", "messageId": "m-victim"}
        stored = httpx2.post(f"{url}/v1/batch", json={"writeKey": WRITE_KEY, "batch": [message]})
        assert stored.status_code == 200, stored.text
        yield url


def stored_ids(sink_url: str) -> list[str]:
    return [c["message_id"] for c in httpx2.get(f"{sink_url}/api/calls", timeout=5).json()]


def test_a_rebound_name_reads_nothing(rebinding_browser: Any, sink_url: str) -> None:
    port = sink_url.rsplit(":", 1)[1]
    page = rebinding_browser.new_page()
    try:
        for path in ("/", "/api/calls"):
            # Same-origin for the browser: a page of evil.example could read this.
            response = page.goto(f"http://{HOSTILE_NAME}:{port}{path}")
            assert response is not None and response.status == 400, path
            assert "victim" not in page.content()
    finally:
        page.close()


def test_a_page_elsewhere_can_neither_reset_nor_fill_the_sink(page: Any, sink_url: str) -> None:
    page.route(
        f"http://{HOSTILE_NAME}/",
        lambda route: route.fulfill(content_type="text/html", body="<!doctype html><p>Hi"),
    )
    # A text/plain form can carry JSON: the body is name=value, here {..., "pad": "="}.
    fake = {"type": "identify", "anonymousId": "fake", "messageId": "m-fake"}
    poison = json.dumps({"writeKey": WRITE_KEY, "batch": [fake], "pad": ""})[:-2]
    for action, enctype, name, value in (
        (f"{sink_url}/api/reset", "application/x-www-form-urlencoded", "x", "y"),
        (f"{sink_url}/v1/batch", "text/plain", poison, '"}'),
    ):
        page.goto(f"http://{HOSTILE_NAME}/")
        with page.expect_navigation() as navigation:
            page.evaluate(POST_FORM, [action, enctype, name, value])
        assert navigation.value.status == 403, action
    assert stored_ids(sink_url) == ["m-victim"]

    # Control: the sink's own page may (a real browser's Origin is the sink's own).
    page.goto(f"{sink_url}/")
    status = page.evaluate("fetch('/api/reset', {method: 'POST'}).then((r) => r.status)")
    assert status == 200
    assert stored_ids(sink_url) == []

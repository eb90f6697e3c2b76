"""Real-browser test support: the ``browser``, ``page`` and ``errors`` fixtures.

tests/conftest.py registers them for every test module. Tests using them must
stay synchronous: Playwright's sync API refuses to run inside a running asyncio
loop. Without Chromium or Playwright they are skipped, except under CI, where
that is a failure (see :mod:`tests.support.ci`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ci import missing
from tests.support.user_agents import DESKTOP_USER_AGENT

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium shared by a test module (one context per test is cheap).

    Module scope, not session: Playwright's sync API keeps an asyncio loop marked
    running on the main thread while it is alive, which breaks asyncio.run() in
    any test that comes after it.
    """
    if not os.path.exists(CHROMIUM_PATH):
        missing(f"Chromium not found at {CHROMIUM_PATH} (apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing("the playwright package is not installed (pip install -e '.[test]')")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def errors() -> list[str]:
    """Page errors and console errors seen by ``page``."""
    return []


@pytest.fixture
def page(browser: Any, errors: list[str]) -> Iterator[Any]:
    """A fresh tab in its own context, recording errors and CSP violations."""
    # A regular desktop browser: headless Chromium's own "HeadlessChrome" marks it a bot.
    context = browser.new_context(user_agent=DESKTOP_USER_AGENT)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    tab.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    # Installed before any page script on every navigation; CDP-injected, so not subject to CSP.
    tab.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', function (e) {"
        "  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI); });"
    )
    yield tab
    context.close()

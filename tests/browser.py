"""Real-browser test support: a headless Chromium fixture and a uvicorn runner.

tests/conftest.py registers the ``browser`` fixture for every test module. Tests
using it must stay synchronous: Playwright's sync API refuses to run inside a
running asyncio loop.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

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
STARTUP_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium shared by a test module (one context per test is cheap).

    Module scope, not session: Playwright's sync API keeps an asyncio loop marked
    running on the main thread while it is alive, which breaks asyncio.run() in
    any test that comes after it.
    """
    missing = None
    if not os.path.exists(CHROMIUM_PATH):
        missing = f"Chromium not found at {CHROMIUM_PATH} (apt-get install -y chromium)"
    elif importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing}; CI must have it", pytrace=False)
        pytest.skip(missing)
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()


# A regular desktop browser: headless Chromium's own "HeadlessChrome" marks it a bot.
DESKTOP_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.fixture
def errors() -> list[str]:
    """Page errors and console errors seen by ``page``."""
    return []


@pytest.fixture
def page(browser: Any, errors: list[str]) -> Iterator[Any]:
    """A fresh tab in its own context, recording errors and CSP violations."""
    context = browser.new_context(user_agent=DESKTOP_USER_AGENT)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
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


@contextmanager
def serve(app: Any, *, timeout: float = STARTUP_TIMEOUT) -> Iterator[str]:
    """Run ``app`` under real uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    # Bind port 0 here and hand the socket over: no race for a "free" port.
    # (uvicorn leaves signal handlers alone when not on the main thread.)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError("uvicorn exited during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            sock.close()
            raise RuntimeError(f"uvicorn did not start within {timeout}s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            # Open keep-alive connections can hold a graceful shutdown.
            server.force_exit = True
            thread.join(timeout)
        sock.close()

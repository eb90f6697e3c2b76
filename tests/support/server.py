"""An ASGI app under real uvicorn on 127.0.0.1, in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pytest
import uvicorn
from starlette.types import ASGIApp

from tests.support.net import LOOPBACK, bound_socket
from tests.support.polling import wait_until

TIMEOUT = 10.0
# Requests still running this long after shutdown began are cancelled (a hanging
# handler must not hold the test); the lifespan shutdown is not cut short.
GRACEFUL_SHUTDOWN = 1


@contextmanager
def serve(
    app: ASGIApp,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    log_level: str = "warning",
) -> Iterator[str]:
    """Serve *app* while the block runs; yield its base URL, ``http://127.0.0.1:PORT``.

    The port is bound before uvicorn starts (no race for it). Start-up and
    shutdown each take at most ``TIMEOUT`` seconds (shutdown twice that when
    open connections hold it and uvicorn is forced out), else the test fails.
    uvicorn leaves the process's logging configuration alone: its records reach
    pytest's capture, from *log_level* up; access lines are off.
    """
    sock = bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    server = uvicorn.Server(config)
    # Not the main thread: uvicorn installs no signal handlers.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(), "uvicorn to start", timeout=TIMEOUT
        )
        if not server.started:
            pytest.fail("uvicorn exited during start-up (see the captured log)")
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(TIMEOUT)
        sock.close()
    if thread.is_alive():
        pytest.fail(f"uvicorn did not stop within {2 * TIMEOUT:g} s")

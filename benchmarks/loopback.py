"""The loopback address, its ports, and single requests to servers listening there.

Every helper that takes a URL refuses (AssertionError) anything but
``http://127.0.0.1:<port>...``: the suite never sends a byte to another host.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import httpx2

LOOPBACK = "127.0.0.1"


def require_loopback(url: str) -> None:
    assert url.startswith(f"http://{LOOPBACK}:"), f"only {LOOPBACK} is ever targeted: {url}"


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; another process may yet take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Return once *port* accepts a connection.

    Raises TimeoutError after *timeout* seconds, or RuntimeError as soon as
    *proc* (the server meant to listen there) has exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> httpx2.Response:
    """One GET, whatever the status (the caller decides what an error is)."""
    require_loopback(url)
    # trust_env=False: a proxy set in the environment must not sit between us and loopback.
    with httpx2.Client(timeout=timeout, trust_env=False) as client:
        return client.get(url, headers=dict(headers or {}))


def http_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    """One request's decoded JSON body; raises ``httpx2.HTTPStatusError`` on a 4xx or 5xx."""
    require_loopback(url)
    with httpx2.Client(timeout=timeout, trust_env=False) as client:
        r = client.request(method, url)
        r.raise_for_status()
        return json.loads(r.content)

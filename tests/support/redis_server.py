"""A throwaway ``redis-server`` for tests: the session-scoped ``redis_url`` fixture.

tests/conftest.py registers the fixture for every test module. Without
``redis-server`` on PATH the tests that use it are skipped, except under CI,
where that is a failure (see :mod:`tests.support.ci`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ci import missing
from tests.support.net import LOOPBACK
from tests.support.polling import started_on_a_free_port

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a fresh redis-server, stopped after the session."""
    executable = shutil.which("redis-server")
    if executable is None:
        missing("redis-server is not on PATH (Debian: apt-get install -y redis-server)")
    proc, port = _start(executable, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        _stop(proc)


def _start(executable: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server on a free port (redis-server takes a port number, not a socket)."""
    log = workdir / "redis.log"

    def spawn(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                executable,
                "--port", str(port),
                "--bind", LOOPBACK,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--logfile", str(log),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    return started_on_a_free_port(
        spawn,
        _answers_ping,
        lambda port: _answering(log),
        name="redis-server",
        log=lambda: _tail(log),
        timeout=STARTUP_TIMEOUT,
        stop=_stop,
    )


def _answering(log: Path) -> str:
    return f"redis-server to answer PING; its log:\n{_tail(log)}"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

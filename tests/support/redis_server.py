"""Throwaway ``redis-server`` processes for tests: the ``redis_url`` and ``redis_server`` fixtures.

tests/conftest.py registers the fixtures for every test module. Without
``redis-server`` on PATH the tests that use them are skipped, except under CI,
where that is a failure (see :mod:`tests.support.ci`).

``redis_url`` is one server for the whole session. ``redis_server`` is a
:class:`RedisServer` of the test's own, which it may kill and start again on
the same port, as an outage and a recovery look to a client.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ci import missing
from tests.support.net import LOOPBACK
from tests.support.polling import started, started_on_a_free_port

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class RedisServer:
    """A redis-server on 127.0.0.1.

    Without persistence a restart starts empty; *persistent*, every write is in
    the append-only file before it is answered, so even a kill loses nothing.
    The port is chosen at the first start and kept: :meth:`restart` brings the
    server back where its clients expect it.
    """

    def __init__(self, executable: str, workdir: Path, *, persistent: bool = False) -> None:
        self._executable = executable
        self._workdir = workdir
        self._persistence = ("yes", "always") if persistent else ("no", "no")
        self._log = workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.port, self._proc = self._first_start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would: no goodbye to the clients."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        """Start again on the same port, once the server is not running; wait until it answers."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("redis-server is still running: kill() it first")
        self._proc = self._spawn(self.port)
        if not started(
            self._proc,
            lambda: _answers_ping(self.port),
            lambda: _answering(self._log),
            timeout=STARTUP_TIMEOUT,
            stop=_stop,
        ):
            pytest.fail(f"redis-server did not start again on port {self.port}:\n{self.tail()}")

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)

    def tail(self) -> str:
        return _tail(self._log)

    def _first_start(self) -> tuple[int, subprocess.Popen[bytes]]:
        """Start on a free port (redis-server takes a port number, not a socket)."""
        proc, port = started_on_a_free_port(
            self._spawn,
            _answers_ping,
            lambda port: _answering(self._log),
            name="redis-server",
            log=self.tail,
            timeout=STARTUP_TIMEOUT,
            stop=_stop,
        )
        return port, proc

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self._executable,
                "--port", str(port),
                "--bind", LOOPBACK,
                "--save", "",
                "--appendonly", self._persistence[0],
                "--appendfsync", self._persistence[1],
                "--dir", str(self._workdir),
                "--logfile", str(self._log),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip


def start_redis_server(workdir: Path, *, persistent: bool = False) -> RedisServer:
    """A running :class:`RedisServer`, its files in *workdir*; the caller stops it."""
    executable = shutil.which("redis-server")
    if executable is None:
        missing("redis-server is not on PATH (Debian: apt-get install -y redis-server)")
    return RedisServer(executable, workdir, persistent=persistent)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a fresh redis-server, stopped after the session."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill and restart; stopped after the test."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


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

"""An ASGI app under a real server, in a process of its own: uvicorn, Hypercorn or Granian.

Each is started from the command line the way a site runs it in production,
on 127.0.0.1, with the lifespan on (it starts and flushes delivery), and
stopped with SIGTERM, the way a process manager stops it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import IO, Literal

import pytest

from tests.support.ci import missing
from tests.support.net import LOOPBACK, bound_socket
from tests.support.polling import started_on_a_free_port

ServerKind = Literal["uvicorn", "hypercorn", "granian"]
SERVERS: tuple[ServerKind, ...] = ("uvicorn", "hypercorn", "granian")

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
# uvicorn re-raises the SIGTERM it handled once it has shut down; the others exit 0.
CLEAN_EXITS = {0, -signal.SIGTERM}
TAIL = 4000  # characters of a log shown in a failure


def _command(kind: ServerKind, app_path: str, port: int) -> list[str]:
    """The command line that serves *app_path* (``module:attribute``) on 127.0.0.1:*port*."""
    if kind == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", app_path),
            *("--host", LOOPBACK, "--port", str(port), "--lifespan", "on"),
            *("--log-level", "warning", "--no-access-log"),
        ]
    if kind == "hypercorn":
        # Hypercorn always runs the lifespan protocol; it has no switch for it.
        return [
            *(sys.executable, "-m", "hypercorn", app_path),
            *("--bind", f"{LOOPBACK}:{port}", "--log-level", "WARNING"),
        ]
    # "asgi", not "asginl": the latter is Granian's ASGI without the lifespan protocol.
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi"),
        *("--host", LOOPBACK, "--port", str(port), "--workers", "1"),
        *("--log-level", "warning", app_path),
    ]


@contextmanager
def run_server(kind: ServerKind, app_path: str, env: Mapping[str, str]) -> Iterator[str]:
    """Serve *app_path* with *kind* while the block runs; yield ``http://127.0.0.1:PORT``.

    A server that is not installed skips the test, or fails it under CI; the
    rest is :func:`run_command`'s.
    """
    if importlib.util.find_spec(kind) is None:
        missing(f"{kind} is not installed (pip install -e '.[test]')")
    with run_command(kind, partial(_command, kind, app_path), env) as url:
        yield url


@contextmanager
def run_command(
    name: str, command: Callable[[int], list[str]], env: Mapping[str, str] = {}
) -> Iterator[str]:
    """Run the server *command* (given its port) while the block runs; yield its URL.

    The server gets this environment plus *env*, and imports this checkout's code
    first (``PYTHONPATH``), not an installed copy. It is ready once its port
    accepts a connection. On leaving it gets SIGTERM and must exit cleanly within
    ``STOP_TIMEOUT`` (else it is killed, with its workers), and without having
    logged a traceback; otherwise the test fails, showing its log.
    """
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(paths)}
    with tempfile.TemporaryFile() as log:
        proc, port = _start(name, command, full_env, log)
        try:
            yield f"http://{LOOPBACK}:{port}"
        finally:
            stopped = _stop(proc)
        output = _read(log)
    tail = output[-TAIL:]
    if not stopped:
        pytest.fail(f"{name} did not stop within {STOP_TIMEOUT:g} s of SIGTERM; its log:\n{tail}")
    if proc.returncode not in CLEAN_EXITS:
        pytest.fail(f"{name} exited with {proc.returncode} on SIGTERM; its log:\n{tail}")
    if "Traceback (most recent call last)" in output:
        pytest.fail(f"{name} logged a traceback; its log:\n{tail}")


def _start(
    name: str, command: Callable[[int], list[str]], env: Mapping[str, str], log: IO[bytes]
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server on a free port (Granian takes a port number, not a socket)."""

    def spawn(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command(port),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: Hypercorn and Granian run the app in a worker
            # process, which a kill must reach too.
            start_new_session=True,
        )

    return started_on_a_free_port(
        spawn,
        _accepts,
        partial(_listening, name, log=log),
        name=name,
        log=lambda: _read(log)[-TAIL:],
        timeout=STARTUP_TIMEOUT,
        stop=_stop,
    )


def _listening(name: str, port: int, *, log: IO[bytes]) -> str:
    return f"{name} to listen on port {port}; its log:\n{_read(log)[-TAIL:]}"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> bool:
    """SIGTERM, as a process manager sends it; False if the whole group had to be killed."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)
        return False
    return True


def _read(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")


def uvicorn_workers(
    app_path: str, workers: int, env: Mapping[str, str], log: IO[bytes], cwd: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``uvicorn --workers N`` on a socket of ours (no port race); the process and its URL.

    The supervisor leads a process group of its own, so :func:`kill_group` takes
    its workers with it when a test fails before stopping it.
    """
    sock = bound_socket()
    try:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", app_path),
                *("--workers", str(workers), "--fd", str(sock.fileno())),
                *("--log-level", "warning", "--no-access-log"),
            ],
            env=env,
            pass_fds=[sock.fileno()],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        return proc, f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    finally:
        sock.close()  # the workers have their copies


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process started by :func:`uvicorn_workers` and its workers, if still running."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

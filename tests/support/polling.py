"""Waiting, boundedly, for something to become true: in a thread or in an event loop."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, TypeVar, overload

import pytest

from tests.support.net import free_port

T = TypeVar("T")

TIMEOUT = 10.0
INTERVAL = 0.01

Description = str | Callable[[], str]


def wait_until(
    check: Callable[[], T | None],
    what: Description,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> T:
    """Call *check* every *interval* seconds until it returns something truthy; return that.

    Fails the test after *timeout* seconds, naming *what* was awaited (a callable
    *what* is called then, so the message can show the state at that moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            _time_out(what, timeout)
        time.sleep(interval)


@overload
async def wait_until_async(
    check: Callable[[], Awaitable[T | None]],
    what: Description,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> T: ...


@overload
async def wait_until_async(
    check: Callable[[], T | None],
    what: Description,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> T: ...


async def wait_until_async(
    check: Callable[[], Any],
    what: Description,
    *,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> Any:
    """:func:`wait_until` in an event loop: sleeps without blocking it.

    *check* may be a plain function or a coroutine function.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            _time_out(what, timeout)
        await asyncio.sleep(interval)


def started(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: Description,
    *,
    timeout: float,
    stop: Callable[[subprocess.Popen[bytes]], object],
) -> bool:
    """Wait until the process *proc* is *ready*: True, or False if it exited first.

    Still neither after *timeout* seconds, it is stopped with *stop* and the test fails.
    """
    try:
        wait_until(lambda: proc.poll() is not None or ready(), what, timeout=timeout, interval=0.05)
    except BaseException:
        stop(proc)
        raise
    return proc.poll() is None


def started_on_a_free_port(
    spawn: Callable[[int], subprocess.Popen[bytes]],
    ready: Callable[[int], bool],
    what: Callable[[int], str],
    *,
    name: str,
    log: Callable[[], str],
    timeout: float,
    stop: Callable[[subprocess.Popen[bytes]], object],
    attempts: int = 3,
) -> tuple[subprocess.Popen[bytes], int]:
    """Spawn a server on a free port until it is *ready*: the process and its port.

    For servers given a port number, not a listening socket: another process may
    take the port first, and then the server exits and the next attempt picks
    another one. After *attempts* exits the test fails with the end of *log*.
    """
    for _ in range(attempts):
        port = free_port()
        proc = spawn(port)
        if started(proc, partial(ready, port), partial(what, port), timeout=timeout, stop=stop):
            return proc, port
    pytest.fail(f"{name} exited at start-up {attempts} times; its log:\n{log()}")


def _time_out(what: Description, timeout: float) -> NoReturn:
    description = what() if callable(what) else what
    pytest.fail(f"timed out after {timeout:g} s waiting for {description}")

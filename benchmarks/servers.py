"""Server subprocesses on loopback ports: started, waited for, measured, stopped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from . import REPO
from .loopback import LOOPBACK, free_port, wait_for_port


class Server:
    """A subprocess we started, listening on a loopback port; stopped by its own handle.

    It runs from the checkout, with the checkout first on ``PYTHONPATH`` (so it
    imports this tree's ``optibase_edge`` and ``benchmarks``) and *env* on top of
    our environment. Its stdout is discarded; its stderr is kept for the error
    if it fails to start.
    """

    def __init__(
        self, name: str, argv: list[str], port: int, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
        )
        # Open for as long as the process runs, so not a with-block: stop() closes it.
        self._log = open(os.devnull, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, cwd=str(REPO), env=full_env, stdout=self._log, stderr=subprocess.PIPE
        )

    def wait_ready(self, timeout: float = 20.0) -> Server:
        """Return self once the port accepts connections; otherwise stop the server and raise."""
        try:
            wait_for_port(self.port, timeout, self.proc)
        except Exception:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
            # Read what it said before stop() closes the pipe.
            stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {stderr[-2000:]}") from None
        return self

    def cpu_seconds(self) -> float | None:
        """User+system CPU seconds the server and its live children have used (Linux /proc).

        The children count because ``uvicorn --workers N`` serves from N worker
        processes under a supervisor that does next to nothing.
        """
        try:
            pids = (self.proc.pid, *_children(self.proc.pid))
            ticks = sum(_cpu_ticks(pid) for pid in pids)
            return ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        """Terminate (kill after 10 s) and release the pipes; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: uvicorn runs lifespan shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    """The live descendants of *pid*, found by their parent ids (no /proc children file here)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):  # one that just ended
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        # "not in found": a pid reused while /proc was read must not make the walk go round.
        kids = [c for c, ppid in parents.items() if ppid == parent and c not in found]
        found += kids
        todo += kids
    return found


def uvicorn_server(
    name: str, target: str, env: Mapping[str, str] | None = None, workers: int = 1
) -> Server:
    """``uvicorn --factory target`` on a free loopback port, *workers* workers, no access log."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        target,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Server(name, argv, port, env)


def sink_server(mode: str) -> Server:
    """``benchmarks.sink`` on a free loopback port: a Segment stand-in that counts or hangs."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.sink", "--port", str(port), "--mode", mode]
    return Server(f"sink-{mode}", argv, port)


@contextlib.contextmanager
def servers(*started: Server) -> Iterator[tuple[Server, ...]]:
    """Wait until every server is ready, yield them, and stop them all on the way out.

    The servers are already running (a ``Server`` starts when built); a failed
    start stops every one of them too.
    """
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()

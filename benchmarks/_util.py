"""Shared plumbing: interleaved rounds, machine facts, loopback servers, load generators."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i] (rounds are paired: measured back to back)."""
    ratios = [x / y for x, y in zip(a, b, strict=True) if y]
    return median(ratios)


def rotate(names: Sequence[str], round_index: int) -> list[str]:
    """The measuring order for one round: rotated, so no variant always goes first."""
    k = round_index % len(names)
    return [*names[k:], *names[:k]]


async def interleave_async(
    measures: Mapping[str, Callable[[], Awaitable[float]]],
    rounds: int,
    warmup: int = 1,
    between: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, list[float]]:
    """Run every measure once per round, rotating the order; return the per-round values."""
    names = list(measures)
    for w in range(warmup):
        for name in rotate(names, w):
            await measures[name]()
            if between is not None:
                await between(name)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotate(names, r):
            gc.collect()
            results[name].append(await measures[name]())
            if between is not None:
                await between(name)
    return results


def interleave(
    measures: Mapping[str, Callable[[], float]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    names = list(measures)
    for w in range(warmup):
        for name in rotate(names, w):
            measures[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotate(names, r):
            gc.collect()
            results[name].append(measures[name]())
    return results


# --------------------------------------------------------------------------- report rows


@dataclass
class Row:
    """One line of the printed table."""

    section: str
    figure: str
    ours: str
    reference: str
    ratio: str
    goal: str = ""
    met: bool | None = None  # None: informational, no goal

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "figure": self.figure,
            "ours": self.ours,
            "reference": self.reference,
            "ratio": self.ratio,
            "goal": self.goal,
            "met": self.met,
        }


@dataclass
class SectionResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def fmt_us(value: float) -> str:
    return f"{value:,.1f} µs" if value >= 10 else f"{value:,.2f} µs"


def fmt_ms(value: float) -> str:
    return f"{value:,.2f} ms"


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in (
        "optibase-edge",
        "starlette",
        "uvicorn",
        "httpx2",
        "h11",
        "anyio",
        "itsdangerous",
        "cachetools",
        "growthbook",
        "segment-analytics-python",
        "requests",
        "fastapi",
        "uvloop",
        "httptools",
    ):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        with contextlib.suppress(Exception):
            out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=5)
            wrk_version = (out.stdout or out.stderr).splitlines()[0].strip()
    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    dirty = None
    with contextlib.suppress(Exception):
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "optibase_edge"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
    import hashlib

    library_files = {
        str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted((REPO / "optibase_edge").rglob("*.py"))
    }
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": packages,
        "wrk": wrk_version,
        "git_commit": commit,
        "library_uncommitted_changes": dirty,
        "library_file_sha256_16": library_files,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


class Server:
    """A subprocess we started, listening on a loopback port; stopped by its own handle."""

    def __init__(self, name: str, argv: list[str], port: int, env: Mapping[str, str] | None = None):
        self.name = name
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
        )
        self._log = open(os.devnull, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, cwd=str(REPO), env=full_env, stdout=self._log, stderr=subprocess.PIPE
        )

    def wait_ready(self, timeout: float = 20.0) -> Server:
        try:
            wait_for_port(self.port, timeout, self.proc)
        except Exception:
            self.stop()
            stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"{self.name} did not start: {stderr[-2000:]}") from None
        return self

    def cpu_seconds(self) -> float | None:
        """User+system CPU seconds the server process has used so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
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


def uvicorn_server(name: str, target: str, env: Mapping[str, str] | None = None) -> Server:
    """``uvicorn --factory target`` on a free loopback port, one worker, no access log."""
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
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Server(name, argv, port, env)


@contextlib.contextmanager
def servers(*started: Server) -> Iterator[tuple[Server, ...]]:
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str
    raw: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "tool": self.tool,
        }


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lua_table(headers: Mapping[str, str]) -> str:
    return (
        "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    )


def wrk_mix_script(
    path: str, headers: Mapping[str, str], alt_headers: Mapping[str, str], alt_every: int
) -> str:
    """A wrk Lua script: every *alt_every*-th request (per thread) uses *alt_headers*."""
    return (
        "local n = 0\n"
        f"local main = {_lua_table(headers)}\n"
        f"local alt = {_lua_table(alt_headers)}\n"
        "request = function()\n"
        "  n = n + 1\n"
        f"  if n % {alt_every} == 0 then return wrk.format('GET', {_lua_string(path)}, alt) end\n"
        f"  return wrk.format('GET', {_lua_string(path)}, main)\n"
        "end\n"
    )


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    headers: Mapping[str, str] | None = None,
    alt_headers: Mapping[str, str] | None = None,
    alt_every: int = 0,
) -> LoadResult:
    """One bounded wrk run against a loopback URL."""
    assert url.startswith(f"http://{LOOPBACK}:"), "loads only ever target loopback"
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    script = None
    if alt_every:
        import tempfile

        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        script.write(wrk_mix_script(path, headers or {}, alt_headers or {}, alt_every))
        script.close()
        argv += ["-s", script.name]
    else:
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
    argv.append(url)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    finally:
        if script is not None:
            os.unlink(script.name)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    return LoadResult(rps, p50, p99, total, errors, "wrk", text)


async def _httpx_load(
    url: str,
    *,
    duration: float,
    connections: int,
    max_requests: int,
    headers: Mapping[str, str] | None,
    alt_headers: Mapping[str, str] | None = None,
    alt_every: int = 0,
) -> LoadResult:
    import httpx2

    assert url.startswith(f"http://{LOOPBACK}:"), "loads only ever target loopback"
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    budget = [max_requests]
    count = [0]
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx2.AsyncClient(limits=limits, timeout=5.0, trust_env=False) as client:

        async def worker() -> None:
            nonlocal errors
            while budget[0] > 0 and time.perf_counter() < deadline:
                budget[0] -= 1
                count[0] += 1
                use = alt_headers if alt_every and count[0] % alt_every == 0 else headers
                t0 = time.perf_counter()
                try:
                    r = await client.get(url, headers=dict(use or {}))
                    if r.status_code >= 400:
                        errors += 1
                except httpx2.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(p * n))] * 1000 if n else float("nan")

    return LoadResult(n / elapsed, pct(0.5), pct(0.99), n, errors, "httpx2")


def run_load(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
    alt_headers: Mapping[str, str] | None = None,
    alt_every: int = 0,
    max_requests: int = 200_000,
) -> LoadResult:
    """wrk when installed, else a bounded httpx2 async load generator (count and time).

    With *alt_every*, every alt_every-th request is sent with *alt_headers* instead.
    """
    if shutil.which("wrk") and not os.environ.get("BENCH_NO_WRK"):
        return run_wrk(
            url,
            duration=duration,
            connections=connections,
            threads=threads,
            headers=headers,
            alt_headers=alt_headers,
            alt_every=alt_every,
        )
    return asyncio.run(
        _httpx_load(
            url,
            duration=duration,
            connections=connections,
            max_requests=max_requests,
            headers=headers,
            alt_headers=alt_headers,
            alt_every=alt_every,
        )
    )


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> Any:
    import httpx2

    assert url.startswith(f"http://{LOOPBACK}:")
    with httpx2.Client(timeout=timeout, trust_env=False) as client:
        return client.get(url, headers=dict(headers or {}))


def http_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    import httpx2

    assert url.startswith(f"http://{LOOPBACK}:")
    with httpx2.Client(timeout=timeout, trust_env=False) as client:
        r = client.request(method, url)
        r.raise_for_status()
        return json.loads(r.content)

"""wrk, the load generator: one bounded run, and its report read back as a LoadResult.

:class:`HeaderPool` makes a run send one header with a different value on every
request, taken in turn from a file (a Lua script does it inside wrk).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .loopback import require_loopback


@dataclass
class LoadResult:
    """One wrk run. Latencies in ms.

    *errors* counts failed requests: socket errors, and answers outside 2xx/3xx.
    """

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    raw: str = ""  # wrk's own report, for reading by eye; left out of as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
        }


@dataclass
class HeaderPool:
    """One header's values, one per line of *path* (*size* lines), a new one every request.

    wrk's *threads* threads each walk a share of the lines (line i is thread
    i mod threads's), wrapping around at the share's end. Each run starts every
    thread *steps* lines into its share: past the lines that any thread sent in
    the runs before, so no run sends again a value an earlier run sent, until
    the shares run out. *sent* counts the requests that carried a value.
    """

    header: str
    path: Path
    size: int
    threads: int
    steps: int = 0
    sent: int = 0

    def most_uses(self) -> int:
        """How many times one line has been sent, at most, over every run so far."""
        return math.ceil(self.steps / (self.size // self.threads))


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    headers: Mapping[str, str] | None = None,
    alt_headers: Mapping[str, str] | None = None,
    alt_every: int = 0,
    pool: HeaderPool | None = None,
) -> LoadResult:
    """One bounded wrk run against a loopback URL (*duration* rounded to whole seconds, ≥ 1).

    Every request carries *headers*; with *alt_every*, every alt_every-th one
    (per thread) carries *alt_headers* instead; with *pool*, every request also
    carries the pool's next value, and the pool's cursor moves past them.
    """
    require_loopback(url)
    if pool is not None and alt_every:
        raise ValueError("a header pool and alternate headers do not mix")
    if pool is not None and pool.threads != threads:
        raise ValueError(f"the header pool is shared by {pool.threads} threads, not {threads}")
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    # wrk's -H applies to every request; anything that varies between requests takes a Lua script.
    script = None
    if alt_every:
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        script = wrk_mix_script(path, headers or {}, alt_headers or {}, alt_every)
    else:
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
        if pool is not None:
            script = wrk_pool_script(pool)
    script_path = None
    if script is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(script)
        script_path = f.name
        argv += ["-s", script_path]
    argv.append(url)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    finally:
        if script_path is not None:
            os.unlink(script_path)
    text = out.stdout
    rps = float(_wrk_field(r"Requests/sec:\s+([\d.]+)", text))
    p50 = _wrk_ms(_wrk_field(r"^\s+50%\s+(\S+)", text))
    p99 = _wrk_ms(_wrk_field(r"^\s+99%\s+(\S+)", text))
    total = int(_wrk_field(r"(\d+) requests in", text))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    if pool is not None:
        pool.steps += int(_wrk_field(r"^header pool: most steps by one thread (\d+)$", text))
        pool.sent += total
    return LoadResult(rps, p50, p99, total, errors, text)


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


def wrk_pool_script(pool: HeaderPool) -> str:
    """A wrk Lua script: each request sets ``pool.header`` to the thread's next pool line.

    Each thread reads its share of the lines once, before the run (only its
    share: a pool far larger than a run needs would otherwise sit in memory
    once per thread), so a timed request only indexes a table; the other
    headers come from wrk's -H options, which wrk.format() takes from
    wrk.headers. At the end the script prints the most lines one thread sent,
    for the next run to start past them.
    """
    return (
        "local threads = {}\n"
        "function setup(thread)\n"
        "  thread:set('id', #threads)\n"
        "  threads[#threads + 1] = thread\n"
        "end\n"
        "values, n, steps = {}, 0, 0\n"
        "function init(args)\n"
        "  local line_no = 0\n"
        f"  for line in io.lines({_lua_string(str(pool.path))}) do\n"
        f"    if line_no % {pool.threads} == id then n = n + 1; values[n] = line end\n"
        "    line_no = line_no + 1\n"
        "  end\n"
        "  if n == 0 then error('no values for this thread in the header pool') end\n"
        "end\n"
        "function request()\n"
        f"  wrk.headers[{_lua_string(pool.header)}] = values[({pool.steps} + steps) % n + 1]\n"
        "  steps = steps + 1\n"
        "  return wrk.format()\n"
        "end\n"
        "function done(summary, latency, requests)\n"
        "  local most = 0\n"
        "  for _, thread in ipairs(threads) do most = math.max(most, thread:get('steps')) end\n"
        "  io.write(string.format('header pool: most steps by one thread %d\\n', most))\n"
        "end\n"
    )


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lua_table(headers: Mapping[str, str]) -> str:
    return (
        "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    )


def _wrk_field(pattern: str, text: str) -> str:
    """The first group of *pattern* in wrk's report; ValueError if wrk did not print it."""
    m = re.search(pattern, text, re.M)
    if m is None:
        raise ValueError(f"no {pattern!r} in the wrk output: {text[-2000:]!r}")
    return m.group(1)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    """A wrk latency ("812.00us", "1.23ms", "2.01s") in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]

"""wrk, the load generator: one bounded run, and its report read back as a LoadResult.

:class:`LoadResult` is the shape every load run reports in, whichever tool made it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .loopback import require_loopback


@dataclass
class LoadResult:
    """One load run. Latencies in ms.

    *errors* counts failed requests: socket errors, and answers outside 2xx/3xx
    (wrk) or of 400 and up (httpx2).
    """

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str
    raw: str = ""  # wrk's own report, for reading by eye; left out of as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "tool": self.tool,
        }


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
    """One bounded wrk run against a loopback URL (*duration* rounded to whole seconds, ≥ 1)."""
    require_loopback(url)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    script_path = None
    if alt_every:
        # wrk's -H applies to every request; mixing two header sets takes a Lua script.
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(wrk_mix_script(path, headers or {}, alt_headers or {}, alt_every))
        script_path = script.name
        argv += ["-s", script_path]
    else:
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
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
    return LoadResult(rps, p50, p99, total, errors, "wrk", text)


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

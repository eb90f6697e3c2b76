"""2. Over HTTP: uvicorn (subprocess, one worker, --no-access-log) on 127.0.0.1.

Two servers run side by side: the bare site and the same site behind
OptibaseMiddleware (events to a JSONL file; a returning visitor emits none).
Load comes from ``wrk -t2 -c32 -d<N>s --latency`` (or, without wrk, a bounded
httpx2 async generator), alternating bare, wrapped, bare, wrapped, ... with the
same browser-like headers and the same Cookie header (holding a valid
``optibase_vid`` for a returning visitor, from a first response). Reported:
requests/s and p99 latency of each, and the ratios.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .config import Config
from .load import run_load
from .loopback import http_get, http_json
from .report import Row, SectionResult, fmt_ms
from .rounds import median, paired_ratio, rotate
from .servers import Server, servers, uvicorn_server

BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
    "Referer": "https://www.google.com/",
}
OTHER_COOKIES = "_ga=GA1.1.1234567890.1700000000; session=abcdef0123456789"


def optibase_cookie(url: str) -> str:
    """A returning visitor's cookie: the Set-Cookie of a first visit."""
    r = http_get(url + "/", headers=BROWSER_HEADERS)
    r.raise_for_status()
    for value in r.headers.get_list("set-cookie"):
        if value.startswith("optibase_vid="):
            return value.split(";", 1)[0]
    raise RuntimeError("the wrapped site did not set optibase_vid")


def interleaved_load(
    targets: dict[str, dict[str, Any]],
    cfg: Config,
    rounds: int,
    duration: float,
    servers_by_name: dict[str, Server] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Bounded loads, A, B, A, B, ... (order rotated each round); targets hold run_load kwargs.

    With *servers_by_name*, each run also records the server process's CPU
    seconds per request (``server_cpu_us_per_request``), which is far less
    sensitive than requests/s to other processes sharing the machine.
    """
    names = list(targets)
    connections, threads = cfg.http_connections, cfg.http_threads
    if cfg.http_warmup:
        for name in names:  # warm-up, untimed
            run_load(**targets[name], duration=1.0, connections=connections, threads=threads)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotate(names, r):
            server = (servers_by_name or {}).get(name)
            cpu0 = server.cpu_seconds() if server else None
            res = run_load(
                **targets[name], duration=duration, connections=connections, threads=threads
            )
            row = res.as_dict()
            cpu1 = server.cpu_seconds() if server else None
            if cpu0 is not None and cpu1 is not None and res.requests:
                row["server_cpu_us_per_request"] = (cpu1 - cpu0) / res.requests * 1e6
            results[name].append(row)
    return results


def run(cfg: Config) -> SectionResult:
    result = SectionResult("http")
    tmp = Path(tempfile.mkdtemp(prefix="optibase-bench-http-"))
    env = {"BENCH_EVENTS_PATH": str(tmp / "events.jsonl")}
    bare = uvicorn_server("bare", "benchmarks.apps:create_bare_app")
    wrapped = uvicorn_server("wrapped", "benchmarks.apps:create_wrapped_app", env)
    try:
        with servers(bare, wrapped):
            cookie = optibase_cookie(wrapped.url)
            headers = {**BROWSER_HEADERS, "Cookie": f"{OTHER_COOKIES}; {cookie}"}
            # Sanity: a returning visitor is recognised (no new Set-Cookie).
            check = http_get(wrapped.url + "/", headers=headers)
            assert "set-cookie" not in check.headers, "returning visitor was re-issued a cookie"
            raw = interleaved_load(
                {
                    "bare": {"url": bare.url + "/", "headers": headers},
                    "wrapped": {"url": wrapped.url + "/", "headers": headers},
                },
                cfg,
                cfg.http_rounds,
                cfg.http_duration,
                servers_by_name={"bare": bare, "wrapped": wrapped},
            )
            stats = http_json(wrapped.url + "/_bench/stats")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    rps = {k: [x["rps"] for x in v] for k, v in raw.items()}
    p99 = {k: [x["p99_ms"] for x in v] for k, v in raw.items()}
    cpu = {
        k: [x["server_cpu_us_per_request"] for x in v if "server_cpu_us_per_request" in x]
        for k, v in raw.items()
    }
    errors = sum(x["errors"] for v in raw.values() for x in v)
    r_rps = paired_ratio(rps["wrapped"], rps["bare"])
    r_p99 = paired_ratio(p99["wrapped"], p99["bare"])
    tool = raw["bare"][0]["tool"]
    s = "2 http"
    result.rows += [
        Row(
            s,
            f"requests/s, returning visitor ({tool} -c{cfg.http_connections})",
            f"{median(rps['wrapped']):,.0f}/s",
            f"bare {median(rps['bare']):,.0f}/s",
            f"{r_rps:.3f}x",
            "≥ 0.95x bare",
            r_rps >= 0.95,
        ),
        Row(
            s,
            "p99 latency, returning visitor",
            fmt_ms(median(p99["wrapped"])),
            f"bare {fmt_ms(median(p99['bare']))}",
            f"{r_p99:.2f}x",
            "",
            None,
        ),
    ]
    if cpu["bare"] and cpu["wrapped"] and len(cpu["bare"]) == len(cpu["wrapped"]):
        result.rows.append(
            Row(
                s,
                "server CPU per request (user+sys, 10 ms ticks)",
                f"{median(cpu['wrapped']):.0f} µs",
                f"bare {median(cpu['bare']):.0f} µs",
                f"{paired_ratio(cpu['wrapped'], cpu['bare']):.2f}x",
                "",
                None,
            )
        )
    if errors:
        result.notes.append(f"http: {errors} non-2xx/socket errors during the load")
    result.raw = {
        "duration_s": cfg.http_duration,
        "connections": cfg.http_connections,
        "threads": cfg.http_threads,
        "rounds": cfg.http_rounds,
        "runs": raw,
        "errors": errors,
        "wrapped_server_optibase_stats": stats,
        "cpu_count": os.cpu_count(),
    }
    return result

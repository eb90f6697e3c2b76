"""2. Over HTTP: uvicorn subprocesses on 127.0.0.1, loaded by wrk.

Two servers run side by side: the bare site and the same site behind
OptibaseMiddleware (events to a JSONL file), each ``uvicorn --workers
<http_workers> --no-access-log``. Load comes from wrk (``wrk -t2 -c32 -d<N>s
--latency``) and from nothing else: a load generator written in Python
saturates before the server does, so its requests/s would say nothing. When
wrk is missing the section installs it (Debian package ``wrk``, see
:func:`benchmarks.load.ensure_wrk`) and fails, saying so, when it cannot.

Every request carries the same browser-like headers and other cookies, and
a returning visitor's ``optibase_vid``, in two ways, each sent to both servers:

* **cold** (the headline): a different valid token on every request, which the
  server process has never verified -- the production case, where a visitor's
  next page lands on any of many workers on many hosts, hours later. The tokens
  are minted here by the library itself (``CookieCodec.encode`` with the
  assignments of ``choose`` on the page's compiled plans) under the wrapped
  site's secret key, so they hold every test on the page: the server sets no
  cookie and emits no event (a sample is checked before timing). A wrk Lua
  script sends them in turn from a pool of ``http_cold_pool`` tokens, each run
  starting where the last one stopped; the pool is larger than what the wrapped
  server is sent in the whole section, and how many times a token was sent at
  most is reported;
* **warm**: one cookie, from a first response, on every request: its token is
  verified once and then found in the verified-token LRU.

The four runs (bare and wrapped, cold and warm) alternate, the order rotated
every round. Reported: requests/s and p99 latency of each with the paired
ratios wrapped/bare, and the servers' CPU time per request.

One worker per server (``Config.http_workers``): on the 2-core machine the
figures are taken on, wrk needs a core of its own, and ``--workers 2``
(uvicorn 0.54) answered every request after about 46 ms, even on a single
wrk connection, bare site included (about 700 requests/s at -c32 against
5,800 with one worker): a stall that would swamp what the middleware costs.
Many workers matter here through the cookie cache, which each worker has
its own of; the cold row already gives every request a token its worker has
never verified.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from optibase_edge._assignment import choose
from optibase_edge._cookie import CookieCodec

from .apps import bench_optibase
from .config import Config
from .load import ensure_wrk, run_load
from .loopback import http_get, http_json
from .report import Row, SectionResult, fmt_ms
from .rounds import median, paired_ratio, rotate
from .servers import Server, servers, uvicorn_server
from .wrk import HeaderPool

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


def write_cold_cookies(path: Path, count: int) -> None:
    """*count* Cookie header values, one a line, each with a new returning visitor's token.

    The tokens are what the wrapped site (``benchmarks.apps:create_wrapped_app``)
    would have set for each visitor on "/": made with its settings, its signing
    key and the library's own codec and assignment, so they stay right whatever
    the token format is.
    """
    ob = bench_optibase(events_path=os.devnull)  # never started: only its settings are used
    codec = CookieCodec(ob.settings.signing_keys)
    plans, _ = ob._pages.for_path("/")
    prefix = f"{OTHER_COOKIES}; {ob.settings.cookie_name}="
    with path.open("w") as f:
        for _ in range(count):
            vid = str(uuid.uuid4())
            assignments = {p.test.id: v for p in plans if (v := choose(p, vid)) is not None}
            f.write(prefix + codec.encode(vid, assignments) + "\n")


def check_returning(url: str, cookies: list[str]) -> None:
    """Raise unless the site at *url* takes each Cookie value as a returning visitor's.

    A visitor it did not recognise, or whose token lacks a test on the page, is
    answered with a Set-Cookie: the load would then measure something else.
    """
    for cookie in cookies:
        r = http_get(url + "/", headers={**BROWSER_HEADERS, "Cookie": cookie})
        if r.status_code != 200 or "set-cookie" in r.headers:
            raise RuntimeError(
                f"not a returning visitor to {url}: status {r.status_code}, "
                f"set-cookie {r.headers.get('set-cookie')!r}, for Cookie: {cookie[:200]}"
            )


def interleaved_load(
    targets: dict[str, dict[str, Any]],
    cfg: Config,
    rounds: int,
    duration: float,
    servers_by_name: dict[str, Server] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Bounded loads, A, B, A, B, ... (order rotated each round); targets hold run_load kwargs.

    With *servers_by_name*, each run also records the server's CPU (its workers' included)
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


COLD_CHECKED = 20  # pool tokens sent one by one before timing, to check they are recognised


def run(cfg: Config) -> SectionResult:
    ensure_wrk()  # before anything starts: without wrk there is nothing to measure
    result = SectionResult("http")
    tmp = Path(tempfile.mkdtemp(prefix="optibase-bench-http-"))
    pool_path = tmp / "cold-cookies.txt"
    env = {"BENCH_EVENTS_PATH": str(tmp / "events.jsonl")}
    bare = uvicorn_server("bare", "benchmarks.apps:create_bare_app", workers=cfg.http_workers)
    wrapped = uvicorn_server(
        "wrapped", "benchmarks.apps:create_wrapped_app", env, workers=cfg.http_workers
    )
    try:
        with servers(bare, wrapped):
            write_cold_cookies(pool_path, cfg.http_cold_pool)
            lines = pool_path.read_text().splitlines()
            # Taken from the pool's end, which the runs reach last, if at all.
            check_returning(wrapped.url, lines[-COLD_CHECKED:])
            warm = {**BROWSER_HEADERS, "Cookie": f"{OTHER_COOKIES}; {optibase_cookie(wrapped.url)}"}
            check_returning(wrapped.url, [warm["Cookie"]])
            # One pool per server: each walks the tokens from the start.
            pools = {
                name: HeaderPool("Cookie", pool_path, cfg.http_cold_pool, cfg.http_threads)
                for name in ("bare", "wrapped")
            }
            raw = interleaved_load(
                {
                    "bare_cold": {
                        "url": bare.url + "/",
                        "headers": BROWSER_HEADERS,
                        "pool": pools["bare"],
                    },
                    "wrapped_cold": {
                        "url": wrapped.url + "/",
                        "headers": BROWSER_HEADERS,
                        "pool": pools["wrapped"],
                    },
                    "bare_warm": {"url": bare.url + "/", "headers": warm},
                    "wrapped_warm": {"url": wrapped.url + "/", "headers": warm},
                },
                cfg,
                cfg.http_rounds,
                cfg.http_duration,
                servers_by_name={
                    "bare_cold": bare,
                    "wrapped_cold": wrapped,
                    "bare_warm": bare,
                    "wrapped_warm": wrapped,
                },
            )
            stats = http_json(wrapped.url + "/_bench/stats")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rps = {k: [x["rps"] for x in v] for k, v in raw.items()}
    p99 = {k: [x["p99_ms"] for x in v] for k, v in raw.items()}
    cpu = {
        k: [x["server_cpu_us_per_request"] for x in v if "server_cpu_us_per_request" in x]
        for k, v in raw.items()
    }
    errors = sum(x["errors"] for v in raw.values() for x in v)
    # Warm-up runs included: they use the pool too.
    cold_sent, uses = pools["wrapped"].sent, pools["wrapped"].most_uses()
    s = "2 http"
    how = f"wrk -c{cfg.http_connections}, {cfg.http_workers} worker" + (
        "s" if cfg.http_workers > 1 else ""
    )
    for kind, label in (("cold", "cold: a token never verified here"), ("warm", "warm: one token")):
        r_rps = paired_ratio(rps[f"wrapped_{kind}"], rps[f"bare_{kind}"])
        r_p99 = paired_ratio(p99[f"wrapped_{kind}"], p99[f"bare_{kind}"])
        result.rows += [
            Row(
                s,
                f"requests/s, returning visitor {label} ({how})",
                f"{median(rps[f'wrapped_{kind}']):,.0f}/s",
                f"bare {median(rps[f'bare_{kind}']):,.0f}/s",
                f"{r_rps:.3f}x",
                "≥ 0.95x bare",
                r_rps >= 0.95,
            ),
            Row(
                s,
                f"p99 latency, returning visitor {kind}",
                fmt_ms(median(p99[f"wrapped_{kind}"])),
                f"bare {fmt_ms(median(p99[f'bare_{kind}']))}",
                f"{r_p99:.2f}x",
                "",
                None,
            ),
        ]
    for kind in ("cold", "warm"):
        ours, ref = cpu[f"wrapped_{kind}"], cpu[f"bare_{kind}"]
        if ours and ref and len(ours) == len(ref):
            result.rows.append(
                Row(
                    s,
                    f"server CPU per request, {kind} (user+sys, 10 ms ticks)",
                    f"{median(ours):.0f} µs",
                    f"bare {median(ref):.0f} µs",
                    f"{paired_ratio(ours, ref):.2f}x",
                    "",
                    None,
                )
            )
    result.notes.append(
        f"http: load from wrk -t{cfg.http_threads} -c{cfg.http_connections}; cold: "
        f"{cold_sent:,} requests to the wrapped site from a pool of {cfg.http_cold_pool:,} "
        f"minted tokens, each sent at most {uses} time{'s' if uses > 1 else ''}"
    )
    if errors:
        result.notes.append(f"http: {errors} non-2xx/socket errors during the load")
    result.raw = {
        "duration_s": cfg.http_duration,
        "connections": cfg.http_connections,
        "threads": cfg.http_threads,
        "workers": cfg.http_workers,
        "rounds": cfg.http_rounds,
        "cold_pool": cfg.http_cold_pool,
        "cold_requests_to_wrapped": cold_sent,
        "cold_max_uses_per_token": uses,
        "runs": raw,
        "errors": errors,
        "wrapped_server_optibase_stats": stats,
        "cpu_count": os.cpu_count(),
    }
    return result

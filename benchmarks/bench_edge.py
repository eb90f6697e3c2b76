"""10. Edge mode: the reverse proxy and its variant blocks, against the site served directly.

Two uvicorn processes, one worker each, on 127.0.0.1: the upstream site, a
Starlette app answering ``/`` with the demo's 100 KB Webflow-like page (four
variant blocks), and the edge, ``OptibaseMiddleware(ReverseProxy(upstream))``
with the page's two tests (events to a JSON-lines file). wrk loads each in
turn, order rotated every round:

* **direct**: the upstream itself (what the site costs with no edge);
* **edge, returning visitor**: one cookie already in both tests: the page is
  fetched from the upstream and its blocks resolved (with no click conversion
  there is no script tag, so the start waits for the blocks to say whether the
  page is the visitor's);
* **edge, new visitor**: no cookie: each request makes a visitor, assigns both
  tests from their blocks (the start held until the page is resolved), sets
  the cookie and records an Identify and two Experiment Viewed.

The edge's figures include the upstream's work (it serves every proxied
request), so the ratios are what a site sees when it puts the edge in front.
On the 2-core machine the figures are taken on, wrk, the edge and the
upstream share the two cores.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .bench_http import interleaved_load
from .config import Config
from .load import ensure_wrk
from .loopback import http_get
from .report import Row, SectionResult, fmt_ms
from .rounds import median, paired_ratio
from .servers import servers, uvicorn_server

HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Safari/537.36"
    ),
    "Accept": "text/html,application/xhtml+xml",
    "Accept-Language": "en-GB,en;q=0.9",
}


def run(cfg: Config) -> SectionResult:
    ensure_wrk()
    result = SectionResult("edge")
    tmp = Path(tempfile.mkdtemp(prefix="optibase-bench-edge-"))
    upstream = uvicorn_server("upstream", "benchmarks.edge_apps:create_upstream_app")
    try:
        with servers(upstream):
            env = {"BENCH_UPSTREAM": upstream.url, "BENCH_EVENTS_PATH": str(tmp / "events.jsonl")}
            edge = uvicorn_server("edge", "benchmarks.edge_apps:create_edge_app", env)
            with servers(edge):
                first = http_get(edge.url + "/", HEADERS)
                # Of the four blocks, one per test is left.
                if first.status_code != 200 or first.content.count(b"data-optibase-test") != 2:
                    raise RuntimeError(f"the edge did not resolve the blocks ({first.status_code})")
                cookie = first.headers["set-cookie"].split(";")[0]
                returning = {**HEADERS, "Cookie": cookie}
                raw = interleaved_load(
                    {
                        "direct": {"url": upstream.url + "/", "headers": HEADERS},
                        "edge_returning": {"url": edge.url + "/", "headers": returning},
                        "edge_new": {"url": edge.url + "/", "headers": HEADERS},
                    },
                    cfg,
                    cfg.edge_rounds,
                    cfg.http_duration,
                    servers_by_name={"edge_returning": edge, "edge_new": edge},
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rps = {k: [x["rps"] for x in v] for k, v in raw.items()}
    p99 = {k: [x["p99_ms"] for x in v] for k, v in raw.items()}
    cpu = {k: [x.get("server_cpu_us_per_request", 0.0) for x in v] for k, v in raw.items()}
    s = "10 edge"
    how = f"100 KB page, wrk -c{cfg.http_connections}, one worker each"
    result.rows.append(
        Row(
            s,
            f"requests/s, the site served directly ({how})",
            f"{median(rps['direct']):,.0f}/s",
            f"p99 {fmt_ms(median(p99['direct']))}",
            "",
            "",
            None,
        )
    )
    for kind, label in (("returning", "returning visitor"), ("new", "new visitor")):
        name = f"edge_{kind}"
        result.rows += [
            Row(
                s,
                f"requests/s through the edge, {label}",
                f"{median(rps[name]):,.0f}/s",
                f"direct {median(rps['direct']):,.0f}/s",
                f"{paired_ratio(rps[name], rps['direct']):.3f}x",
                "",
                None,
            ),
            Row(
                s,
                f"p99 latency through the edge, {label}",
                fmt_ms(median(p99[name])),
                f"direct {fmt_ms(median(p99['direct']))}",
                f"{paired_ratio(p99[name], p99['direct']):.2f}x",
                "",
                None,
            ),
            Row(
                s,
                f"edge CPU per request, {label} (user+sys, 10 ms ticks)",
                f"{median(cpu[name]):.0f} µs",
                "",
                "",
                "",
                None,
            ),
        ]
    errors = sum(x["errors"] for v in raw.values() for x in v)
    if errors:
        result.notes.append(f"edge: {errors} non-2xx/socket errors during the load")
    result.raw = {"runs": raw, "errors": errors, "rounds": cfg.edge_rounds}
    return result

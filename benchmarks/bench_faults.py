"""6. Under faults: the site's p99 while the Segment endpoint hangs vs a healthy one.

In one run, two identical wrapped sites (uvicorn subprocesses, production
settings: secret key, write key, ``segment_endpoint``) point one at a healthy
counting sink and one at a sink that accepts connections and never answers.
Both get the same bounded wrk load, alternating healthy, hanging, healthy, ...
Both servers live across all rounds, so the hanging one also goes through its
request timeouts (``request_timeout``, 10 s) and retries.

Two load mixes, one after the other on the same servers:

* ``mixed`` (the goal figure): 9 of 10 requests from a returning visitor, 1 of
  10 from a new visitor (4 events: Identify + 3 Experiment Viewed), i.e. about
  0.4 events per request;
* ``all new`` (stress, informational): every request is a new visitor, 4 events
  per request -- more than delivery can keep up with at saturation.

Reported: p99 and requests/s of each, the p99 ratio hanging/healthy, and each
server's delivery counters at the end.

Then the saturation row (goal: 0 dropped): a fresh uvicorn worker against the
healthy sink over real HTTP on 127.0.0.1, loaded by wrk -c32 with nothing but
new visitors (4 events a request) for a bounded time (15 s; 5 s with --quick),
its delivery left to finish, and its ``dropped`` counter read. Default
settings, no spool: the sender itself must keep up.
"""

from __future__ import annotations

import time
from typing import Any

from .bench_http import BROWSER_HEADERS, OTHER_COOKIES, interleaved_load, optibase_cookie
from .config import Config
from .loopback import http_json
from .report import Row, SectionResult, fmt_ms
from .rounds import median, paired_ratio
from .servers import Server, servers, sink_server, uvicorn_server
from .wrk import run_wrk

NEW_EVERY = 10
SATURATION_CONNECTIONS = 32
SETTLE_POLLS = 120  # x 0.25 s: how long delivery may take to finish after the load


def run(cfg: Config) -> SectionResult:
    result = SectionResult("faults")
    healthy_sink, hanging_sink = sink_server("count"), sink_server("hang")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    stats: dict[str, dict[str, Any]] = {}
    with servers(healthy_sink, hanging_sink):
        healthy = uvicorn_server(
            "site-healthy",
            "benchmarks.apps:create_wrapped_app",
            {"BENCH_SEGMENT_ENDPOINT": healthy_sink.url},
        )
        hanging = uvicorn_server(
            "site-hanging",
            "benchmarks.apps:create_wrapped_app",
            {"BENCH_SEGMENT_ENDPOINT": hanging_sink.url},
        )
        with servers(healthy, hanging):
            # Both sites share the secret key, so one returning visitor's cookie fits both.
            cookie = optibase_cookie(healthy.url)
            returning = {**BROWSER_HEADERS, "Cookie": f"{OTHER_COOKIES}; {cookie}"}
            new = dict(BROWSER_HEADERS)
            mixes: dict[str, dict[str, Any]] = {
                "mixed": {"headers": returning, "alt_headers": new, "alt_every": NEW_EVERY},
                "all_new": {"headers": new},
            }
            for mix, kwargs in mixes.items():
                if mix not in cfg.fault_mixes:
                    continue
                raw[mix] = interleaved_load(
                    {
                        "healthy": {"url": healthy.url + "/", **kwargs},
                        "hanging": {"url": hanging.url + "/", **kwargs},
                    },
                    cfg,
                    cfg.fault_rounds,
                    cfg.fault_duration,
                )
                stats[mix] = {
                    "healthy": http_json(healthy.url + "/_bench/stats"),
                    "hanging": http_json(hanging.url + "/_bench/stats"),
                }
            sink_counts = http_json(healthy_sink.url + "/count")
        saturation = saturate(healthy_sink, cfg)
    s = "6 faults"
    ratios = {}
    for mix, label in (("mixed", "10% new visitors"), ("all_new", "100% new, stress")):
        if mix not in raw:
            continue
        p99 = {k: [x["p99_ms"] for x in v] for k, v in raw[mix].items()}
        rps = {k: [x["rps"] for x in v] for k, v in raw[mix].items()}
        r_p99 = paired_ratio(p99["hanging"], p99["healthy"])
        r_rps = paired_ratio(rps["hanging"], rps["healthy"])
        ratios[mix] = {"p99_hanging_over_healthy": r_p99, "rps_hanging_over_healthy": r_rps}
        goal = mix == "mixed"
        st = stats[mix]
        result.rows += [
            Row(
                s,
                f"p99, Segment hangs vs healthy ({label})",
                fmt_ms(median(p99["hanging"])),
                f"healthy {fmt_ms(median(p99['healthy']))}",
                f"{r_p99:.2f}x",
                "≤ 1.1x" if goal else "",
                (r_p99 <= 1.1) if goal else None,
            ),
            Row(
                s,
                f"requests/s, hangs vs healthy ({label})",
                f"{median(rps['hanging']):,.0f}/s",
                f"healthy {median(rps['healthy']):,.0f}/s",
                f"{r_rps:.2f}x",
                "",
                None,
            ),
            Row(
                s,
                f"events so far: hanging site / healthy site ({label})",
                f"{st['hanging'].get('dropped', 0):,} dropped, "
                f"{st['hanging'].get('pending', 0):,} pending",
                f"healthy {st['healthy'].get('sent', 0):,} sent, "
                f"{st['healthy'].get('dropped', 0):,} dropped",
                "",
                "",
                None,
            ),
        ]
    dropped, accepted = saturation["stats"]["dropped"], saturation["stats"]["accepted"]
    result.rows.append(
        Row(
            s,
            "100 % new visitors at saturation, Segment healthy: dropped",
            f"{dropped:,}",
            f"of {accepted:,} events, {saturation['sink_messages']:,} at the sink",
            f"{saturation['load']['rps']:,.0f} req/s, wrk -c{SATURATION_CONNECTIONS} "
            f"{saturation['seconds']:g} s",
            "= 0",
            dropped == 0,
        )
    )
    errors = sum(x["errors"] for m in raw.values() for v in m.values() for x in v)
    if errors:
        result.notes.append(f"faults: {errors} non-2xx/socket errors during the load")
    result.raw = {
        "duration_s": cfg.fault_duration,
        "rounds": cfg.fault_rounds,
        "new_visitor_every": NEW_EVERY,
        "runs": raw,
        "ratios": ratios,
        "errors": errors,
        "optibase_stats_after_each_mix": stats,
        "healthy_sink_counts": sink_counts,
        "saturation": saturation,
    }
    return result


def saturate(sink: Server, cfg: Config) -> dict[str, Any]:
    """One uvicorn worker under wrk, all new visitors, against *sink*; its counters after.

    The sink's counters are reset first, so what it reports is this site's. The
    site's delivery is given up to ``SETTLE_POLLS`` polls to send what is
    pending once the load stops; ``dropped`` does not change after the load.
    """
    seconds = max(5.0, 5 * cfg.fault_duration)
    http_json(sink.url + "/reset", method="POST")
    site = uvicorn_server(
        "site-saturated", "benchmarks.apps:create_wrapped_app", {"BENCH_SEGMENT_ENDPOINT": sink.url}
    )
    with servers(site):
        load = run_wrk(
            site.url + "/",
            duration=seconds,
            connections=SATURATION_CONNECTIONS,
            threads=cfg.http_threads,
            headers=BROWSER_HEADERS,
        )
        stats = http_json(site.url + "/_bench/stats")
        for _ in range(SETTLE_POLLS):
            if stats.get("pending", 0) == 0:
                break
            time.sleep(0.25)
            stats = http_json(site.url + "/_bench/stats")
    counts = http_json(sink.url + "/count")
    return {
        "seconds": seconds,
        "load": load.as_dict(),
        "stats": stats,
        "sink_messages": counts["messages"].get("optibase-edge", 0),
    }

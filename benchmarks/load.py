"""Bounded HTTP load against a loopback URL: wrk when installed, else an httpx2 generator.

Every run is bounded in time (*duration*) and, for the httpx2 generator, in
request count too; each request times out after 5 s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Mapping

import httpx2

from .loopback import require_loopback
from .wrk import LoadResult, run_wrk


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
    ``BENCH_NO_WRK`` set in the environment forces the httpx2 generator.
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
    """*connections* concurrent workers draw on one budget of *max_requests* until the deadline."""
    require_loopback(url)
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

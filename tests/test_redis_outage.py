"""Redis killed and restarted under ``uvicorn --workers 4``: pages, once-only events, counters.

A real redis-server (persistent: the kill loses no claim, so what is tested
is the outage, not a Redis that forgets), the site of
tests/support/outage_site.py under four uvicorn workers, and a Segment capture.
A bounded load of new and returning visitors runs before the kill, while Redis
is down, and after it is back; then SIGTERM, and each worker's lifespan
shutdown flushes its events and writes its counters.

Page latencies per phase are printed (``-s`` shows them), never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx2
import pytest

from tests.support.accounting import balanced
from tests.support.capture import SegmentCapture
from tests.support.polling import wait_until_async
from tests.support.redis_server import RedisServer, start_redis_server
from tests.support.servers import kill_group, uvicorn_workers
from tests.support.user_agents import AS_A_BROWSER

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "wk-outage"
WORKERS = 4
NEW_PER_PHASE = 80  # new visitors in each phase; the earlier phase's come back
CONCURRENCY = 16
COOKIE = "optibase_vid"
STOP_TIMEOUT = 30.0


@dataclass
class Load:
    """What the visitors saw: their cookies, the pages' latencies, any error."""

    cookies: dict[str, str] = field(default_factory=dict)  # visitor ID -> cookie
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    pids: set[str] = field(default_factory=set)

    async def get(
        self, client: httpx2.AsyncClient, phase: str, path: str, cookie: str | None
    ) -> httpx2.Response | None:
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        started = time.perf_counter()
        try:
            response = await client.get(path, headers=headers)
        except httpx2.HTTPError as exc:
            self.errors.append(f"{phase} {path}: {exc!r}")
            return None
        self.latencies[phase].append(time.perf_counter() - started)
        if response.status_code != 200:
            self.errors.append(f"{phase} {path}: {response.status_code}")
            return None
        self.pids.add(response.text.split()[1])
        return response

    async def new_visitor(self, client: httpx2.AsyncClient, phase: str) -> str | None:
        response = await self.get(client, phase, "/", None)
        if response is None:
            return None
        visitor = response.text.split()[0]
        set_cookie = response.headers.get("set-cookie", "")
        name, _, value = set_cookie.partition(";")[0].partition("=")
        if name != COOKIE:
            self.errors.append(f"{phase} /: no visitor cookie but {set_cookie!r}")
            return None
        self.cookies[visitor] = value
        await self.get(client, phase, "/pricing", self.cookies[visitor])
        return visitor

    async def returning_visitor(self, client: httpx2.AsyncClient, phase: str, visitor: str) -> None:
        for path in ("/", "/pricing", "/pricing"):  # each on a fresh connection: any worker
            await self.get(client, phase, path, self.cookies[visitor])

    async def phase(
        self, client: httpx2.AsyncClient, phase: str, returning: list[str]
    ) -> list[str]:
        """*NEW_PER_PHASE* new visitors and the *returning* ones, CONCURRENCY at a time."""
        slots = asyncio.Semaphore(CONCURRENCY)
        new: list[str] = []

        async def one(visitor: str | None) -> None:
            async with slots:
                if visitor is None:
                    if (made := await self.new_visitor(client, phase)) is not None:
                        new.append(made)
                else:
                    await self.returning_visitor(client, phase, visitor)

        await asyncio.gather(*(one(None) for _ in range(NEW_PER_PHASE)), *map(one, returning))
        return new

    def report(self) -> str:
        lines = [f"{'phase':<8} {'pages':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
        for phase, samples in self.latencies.items():
            ordered = sorted(samples)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            lines.append(
                f"{phase:<8} {len(ordered):>6} {statistics.median(ordered) * 1e3:>8.1f} "
                f"{p99 * 1e3:>8.1f} {ordered[-1] * 1e3:>8.1f}"
            )
        return "\n".join(lines)


@pytest.fixture
def sink() -> Iterator[SegmentCapture]:
    with SegmentCapture(write_key=WRITE_KEY) as server:
        yield server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = start_redis_server(workdir, persistent=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("policy", ["send", "hold"])
async def test_redis_killed_and_restarted_under_four_workers(
    policy: str, sink: SegmentCapture, redis: RedisServer, tmp_path: Path
) -> None:
    stats_dir = tmp_path / "stats"
    stats_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OUTAGE_REDIS_URL": redis.url,
        "OUTAGE_SEGMENT_ENDPOINT": sink.url,
        "OUTAGE_WRITE_KEY": WRITE_KEY,
        "OUTAGE_ON_STORE_ERROR": policy,
        "OUTAGE_STATS_DIR": str(stats_dir),
    }
    load = Load()
    log_path = tmp_path / "uvicorn.log"
    with open(log_path, "wb") as log:
        proc, url = uvicorn_workers("tests.support.outage_site:app", WORKERS, env, log, ROOT)
        try:
            limits = httpx2.Limits(max_keepalive_connections=0)  # a new connection each request
            # Cookies only as each visitor's requests send them: the client keeps none.
            no_jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
            async with (
                httpx2.AsyncClient(
                    base_url=url,
                    headers=dict(AS_A_BROWSER),
                    cookies=no_jar,
                    limits=limits,
                    timeout=10,
                ) as client,
                httpx2.AsyncClient(base_url=url, limits=limits, timeout=2) as bot,
            ):

                async def all_workers_up() -> bool:  # a bot's request: no visitor, no event
                    assert proc.poll() is None, log_path.read_text(errors="replace")
                    with contextlib.suppress(httpx2.HTTPError):
                        load.pids.add((await bot.get("/pid")).text)
                    return len(load.pids) == WORKERS

                await wait_until_async(all_workers_up, "four workers", timeout=20, interval=0.05)
                load.pids.clear()
                # Each worker's first pages pay for its warming up: not "before" Redis dies.
                warm = await load.phase(client, "warm-up", [])
                before = await load.phase(client, "before", warm)
                redis.kill()
                during = await load.phase(client, "during", before)
                redis.restart()
                await load.phase(client, "after", during)
            proc.send_signal(signal.SIGTERM)  # graceful: each worker's lifespan shutdown flushes
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
        finally:
            kill_group(proc)
    output = log_path.read_text(errors="replace")
    print(f"\n[{policy}] page latencies; Redis is killed for 'during', back for 'after':")
    print(load.report())

    assert proc.returncode == 0, output
    assert load.errors == [], load.errors[:10]
    assert len(load.pids) == WORKERS  # every worker served the load
    assert len(load.cookies) == 4 * NEW_PER_PHASE

    # Every visitor's once-only events: exactly once ("hold"), or once per messageId ("send").
    copies: Counter[tuple[str, str]] = Counter()
    ids: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for message in sink.messages:
        what: tuple[str, str] = (message["anonymousId"], message.get("event") or message["type"])
        copies[what] += 1
        ids[what].add(message["messageId"])
    expected = {
        (visitor, what)
        for visitor in load.cookies
        for what in ("identify", "Experiment Viewed", "Conversion Triggered")
    }
    assert set(copies) == expected
    assert all(len(ids[what]) == 1 for what in expected), "a once-only event with two messageIds"

    # Each worker's counters say what happened.
    counters = [json.loads(p.read_text()) for p in sorted(stats_dir.glob("*.json"))]
    assert len(counters) == WORKERS, output
    total = {name: sum(c[name] for c in counters) for name in counters[0]}
    print(f"[{policy}] counters, all workers: {total}")
    assert all(balanced(c) for c in counters), counters
    assert (total["pending"], total["held"], total["failed"], total["dropped"]) == (0, 0, 0, 0)
    assert total["store_errors"] > 0  # the outage was seen
    assert total["sent"] == len(sink.messages)
    if policy == "hold":
        assert max(copies.values()) == 1
        assert total["sent_unclaimed"] == 0
    else:
        assert total["sent_unclaimed"] > 0
        assert sum(copies.values()) - len(expected) <= total["sent_unclaimed"]

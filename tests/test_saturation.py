"""Nothing dropped at saturation while Segment is healthy, with a spool.

A real uvicorn worker serves a flood of new visitors (each request a first
visit: an Identify and an Experiment Viewed) with a buffer far too small for
it, and a batch that waits seconds to fill, so the buffer is full at once and
stays full; Segment is a local capture over real HTTP. What finds the buffer
full goes to the spool and comes back as there is room: none of it is dropped,
and every event reaches Segment exactly once. The flood is bounded by count.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.capture import SegmentCapture
from tests.support.servers import run_server
from tests.support.user_agents import AS_A_BROWSER

APP = "tests.support.e2e_site:app"
WRITE_KEY = "wk-saturation"
SECRET = "saturation-secret-" + "s" * 32
CONNECTIONS = 32
REQUESTS_EACH = 25  # 800 new visitors, 1,600 events, through a buffer of 200
BUFFER = 200  # and as many again on their way to the spool, while it writes
FLUSHES = 20  # each at most 5 s: bounded, and far more than needed


@pytest.fixture
def capture() -> Iterator[SegmentCapture]:
    with SegmentCapture(write_key=WRITE_KEY) as received:
        yield received


async def flood(url: str) -> int:
    """CONNECTIONS clients, each REQUESTS_EACH requests as a new visitor; the 200s."""

    async def client() -> int:
        ok = 0
        async with httpx2.AsyncClient(headers=AS_A_BROWSER, timeout=30) as http:
            for _ in range(REQUESTS_EACH):
                http.cookies.clear()  # a new visitor every time
                ok += (await http.get(url + "/")).status_code == 200
        return ok

    return sum(await asyncio.gather(*(client() for _ in range(CONNECTIONS))))


def test_a_flood_of_new_visitors_drops_nothing_and_sends_each_event_once(
    capture: SegmentCapture, tmp_path: Path
) -> None:
    env = {
        "OPTIBASE_SECRET_KEYS": SECRET,
        "OPTIBASE_SEGMENT_WRITE_KEY": WRITE_KEY,
        "E2E_SEGMENT_ENDPOINT": capture.url,
        "E2E_STATIC_DIR": str(tmp_path),
        "E2E_FLUSH_INTERVAL": "5",  # the buffer fills long before a batch is due
        "E2E_MAX_BUFFER_EVENTS": str(BUFFER),
        "E2E_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
    }
    with run_server("uvicorn", APP, env) as url:
        visitors = asyncio.run(flood(url))
        with httpx2.Client(timeout=30) as http:
            for _ in range(FLUSHES):
                if http.get(url + "/flush").json()["flushed"]:
                    break
            stats = http.get(url + "/stats").json()
    assert visitors == CONNECTIONS * REQUESTS_EACH
    assert stats["overflowed"] > 0 and stats["restored"] >= stats["overflowed"]
    assert (stats["dropped"], stats["deferred"], stats["failed"], stats["pending"]) == (0, 0, 0, 0)
    assert stats["accepted"] == stats["sent"] == 2 * visitors
    messages = capture.messages
    per_id = Counter(m["messageId"] for m in messages)
    assert len(messages) == stats["sent"] and max(per_id.values()) == 1  # each exactly once
    identified = {m["anonymousId"] for m in messages if m["type"] == "identify"}
    assert len(identified) == visitors

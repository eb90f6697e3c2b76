"""The HTTP benchmark's load: wrk always (installed when missing), a new cookie per request.

The pool tests run wrk for a second against a small keep-alive server in this
process that records every Cookie header it is sent.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from benchmarks import load
from benchmarks.apps import PAGE_TESTS, SECRET
from benchmarks.bench_http import write_cold_cookies
from benchmarks.loopback import LOOPBACK
from benchmarks.wrk import HeaderPool, run_wrk
from optibase_edge._cookie import CookieCodec
from tests.support.ci import missing

# Far more lines than wrk gets through in two seconds against this server (about 10,000/s).
POOL = 200_000


class Recorder(BaseHTTPRequestHandler):
    """Answers 204 on a kept-alive connection and notes the Cookie header in *seen*."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Cookie", ""))  # list.append is atomic
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk resets its connections when a run ends


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = QuietServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()


def pool_file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "pool.txt"
    path.write_text("".join(f"v={i}\n" for i in range(size)))
    return path


def wrk_or_missing() -> None:
    """wrk, installed if need be; else a skip on a developer's machine, a failure under CI."""
    try:
        load.ensure_wrk()
    except load.WrkMissing as exc:
        missing(str(exc))


def test_each_request_carries_a_pool_value_no_run_sends_twice(
    tmp_path: Path, recorder: tuple[str, list[str]]
) -> None:
    wrk_or_missing()
    url, seen = recorder
    pool = HeaderPool("Cookie", pool_file(tmp_path, POOL), POOL, threads=2)
    runs = []
    for _ in range(2):
        first = len(seen)
        res = run_wrk(url, duration=1, connections=4, threads=2, headers={"X-A": "b"}, pool=pool)
        assert res.errors == 0 and res.requests > 0
        runs.append(seen[first:])
    # wrk counts the requests answered before its deadline; a few more were in flight.
    assert pool.sent <= len(seen) <= pool.sent + 2 * 4
    assert pool.most_uses() == 1
    assert all(value.startswith("v=") for value in seen)
    # Within a run and across runs: each value sent once.
    assert len(set(seen)) == len(seen)
    assert not set(runs[0]) & set(runs[1])


def test_the_pool_wraps_around(tmp_path: Path, recorder: tuple[str, list[str]]) -> None:
    wrk_or_missing()
    url, seen = recorder
    pool = HeaderPool("Cookie", pool_file(tmp_path, 10), 10, threads=2)
    for _ in range(5):  # bounded: enough runs to go round the pool twice, however slow
        res = run_wrk(url, duration=1, connections=2, threads=2, pool=pool)
        assert res.errors == 0
        if len(seen) >= 2 * 10:
            break
    assert set(seen) == {f"v={i}" for i in range(10)}
    # The pool's own count of the most uses of one value bounds what the server saw.
    assert max(Counter(seen).values()) <= pool.most_uses()
    assert pool.most_uses() >= 2


def test_cold_cookies_are_the_wrapped_sites_and_all_new(tmp_path: Path) -> None:
    path = tmp_path / "cold.txt"
    write_cold_cookies(path, 50)
    lines = path.read_text().splitlines()
    tokens = [line.rsplit("optibase_vid=", 1)[1] for line in lines]
    codec = CookieCodec([SECRET])
    records = [codec.decode(token) for token in tokens]
    assert all(
        r is not None and set(r.assignments) == {name for name, _, _ in PAGE_TESTS} for r in records
    )
    assert len({r.visitor_id for r in records if r is not None}) == 50


def test_without_wrk_and_no_way_to_install_it_the_load_fails_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(load.WrkMissing, match=r"wrk is required.*no apt-get"):
        load.run_load(f"http://{LOOPBACK}:9/", duration=1, connections=1)

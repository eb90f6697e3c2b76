"""RedisStore against a real redis-server (see tests/support/redis_server.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optibase_edge import RedisStore
from tests.support.net import LOOPBACK, bound_socket, free_port
from tests.support.stores import BOTH_SITES, FIRST_SITE, conversions_from_two_sites

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parent.parent


def fresh_prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_url, prefix=fresh_prefix())
    yield s
    await s.aclose()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain synchronous client, to look at what the store wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_two_sites_sharing_redis_send_each_once_only_event_once(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = fresh_prefix()
    first, second = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    counts = await conversions_from_two_sites(first, second, tmp_path)
    assert counts == {BOTH_SITES: 1, FIRST_SITE: 1}


async def test_first_claim_wins_second_loses(store: RedisStore) -> None:
    assert await store.claim("event-1", 60) is True
    assert await store.claim("event-1", 60) is False
    assert await store.claim("event-2", 60) is True


async def test_claim_is_one_set_nx_px_on_a_bounded_key(store: RedisStore, raw: redis.Redis) -> None:
    long_key = "x" * 1_000_000 + "\ud800"
    assert await store.claim(long_key, 30) is True
    keys = list(raw.scan_iter(match=store.prefix + "*"))
    assert keys == [store.redis_key(long_key).encode()]
    assert len(keys[0]) == len(store.prefix) + 32
    assert raw.get(keys[0]) == b"1"
    assert 0 < raw.pttl(keys[0]) <= 30_000


async def test_ttl_expires(store: RedisStore, raw: redis.Redis) -> None:
    assert await store.claim("short", 0.4) is True
    assert await store.claim("short", 0.4) is False
    assert 0 < raw.pttl(store.redis_key("short")) <= 400
    await asyncio.sleep(0.6)
    assert await store.claim("short", 0.4) is True


async def test_tiny_and_zero_ttl_still_expire(store: RedisStore, raw: redis.Redis) -> None:
    # Rounded up to at least 1 ms, never sent as PX 0 (an error) or without PX (forever).
    assert await store.claim("zero", 0) is True
    assert await store.claim("tiny", 0.0001) is True
    await asyncio.sleep(0.05)
    assert raw.exists(store.redis_key("zero"), store.redis_key("tiny")) == 0


@pytest.mark.parametrize("ttl", [math.nan, math.inf, -math.inf])
async def test_non_finite_ttl_is_rejected(store: RedisStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.claim("k", ttl)


async def test_concurrent_claims_over_two_stores_one_winner(redis_url: str) -> None:
    prefix = fresh_prefix()
    a, b = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        results = await asyncio.gather(
            *((a if i % 2 else b).claim("contended", 60) for i in range(100))
        )
    finally:
        await a.aclose()
        await b.aclose()
    assert results.count(True) == 1
    assert results.count(False) == 99


async def test_many_distinct_keys_each_claimed_once(store: RedisStore) -> None:
    keys = [f"user-{i}:exp-{i % 7}" for i in range(2000)]
    first = await asyncio.gather(*(store.claim(k, 60) for k in keys))
    again = await asyncio.gather(*(store.claim(k, 60) for k in keys))
    assert all(first)
    assert not any(again)


async def test_prefixes_are_separate_namespaces(redis_url: str) -> None:
    a, b = (
        RedisStore(redis_url, prefix=fresh_prefix()),
        RedisStore(redis_url, prefix=fresh_prefix()),
    )
    try:
        assert await a.claim("same", 60) is True
        assert await b.claim("same", 60) is True
    finally:
        await a.aclose()
        await b.aclose()


async def test_odd_keys_are_distinct(store: RedisStore) -> None:
    keys = ["", " ", "\x00", "\ud800", "\udfff", "\ud83d\ude00", "😀", "é", "e\u0301", "ß", "SS"]
    assert [await store.claim(k, 60) for k in keys] == [True] * len(keys)
    assert [await store.claim(k, 60) for k in keys] == [False] * len(keys)


_with_surrogates = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=st.one_of(st.text(), _with_surrogates, st.text(min_size=200, max_size=2000)))
async def test_any_text_key_claims_once(redis_url: str, key: str) -> None:
    s = RedisStore(redis_url, prefix=fresh_prefix())
    try:
        assert [await s.claim(key, 60), await s.claim(key, 60)] == [True, False]
    finally:
        await s.aclose()


async def test_usable_again_after_aclose(store: RedisStore) -> None:
    assert await store.claim("k", 60) is True
    await store.aclose()
    await store.aclose()
    assert await store.claim("k", 60) is False


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_used_from_two_event_loops_in_turn(redis_url: str) -> None:
    s = RedisStore(redis_url, prefix=fresh_prefix())

    async def first() -> list[bool]:
        return [await s.claim("a", 60), await s.claim("a", 60)]

    async def second() -> list[bool]:
        try:
            return [await s.claim("a", 60), await s.claim("b", 60), await s.claim("b", 60)]
        finally:
            await s.aclose()

    assert asyncio.run(first()) == [True, False]
    assert asyncio.run(second()) == [False, True, False]
    gc.collect()  # the first loop's client was dropped, not closed: let it go here


_CLAIMER = """
import asyncio, json, sys, time
from optibase_edge import RedisStore

url, prefix, start_at, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

async def main():
    store = RedisStore(url, prefix=prefix)
    try:
        await store.claim("warm-up", 60)  # connect before the start line
        time.sleep(max(0.0, start_at - time.time()))
        won = await asyncio.gather(*(store.claim(f"key-{i}", 60) for i in range(n)))
    finally:
        await store.aclose()
    print(json.dumps([i for i, w in enumerate(won) if w]))

asyncio.run(main())
"""


def test_two_processes_share_claims(redis_url: str) -> None:
    prefix, n = fresh_prefix(), 500
    start_at = time.time() + 2.0  # both processes fire together, after their imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, redis_url, prefix, str(start_at), str(n)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    won: list[list[int]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        won.append(json.loads(out))
    assert len(won[0]) + len(won[1]) == n
    assert sorted(won[0] + won[1]) == list(range(n))


async def test_server_down_raises() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    s = RedisStore(url, socket_timeout=0.5)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(redis.exceptions.ConnectionError):
            await s.claim("k", 60)
    assert time.monotonic() - started < 3  # no hidden retry loop
    await s.aclose()


async def test_silent_server_times_out() -> None:
    # Accepts connections (the kernel's backlog does) but never answers.
    with bound_socket() as listener:
        listener.listen(8)
        s = RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", socket_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(redis.exceptions.RedisError):
            await s.claim("k", 60)
        assert time.monotonic() - started < 3
        await s.aclose()


async def test_a_lost_reply_is_an_error_and_the_set_is_not_resent() -> None:
    # A fake server that answers the handshake, then drops the connection on
    # SET, as if the reply had been lost. A client that resent the SET would
    # report our own claim as someone else's: it must raise instead, once.
    sets: list[list[bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                assert line.startswith(b"*"), line
                args = []
                for _ in range(int(line[1:])):
                    size = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(size + 2))[:-2])
                if args[0].upper() == b"SET":
                    sets.append(args)
                    break
                writer.write(b"+OK\r\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="p:", socket_timeout=1)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await s.claim("k", 1.5)
    finally:
        await s.aclose()
        server.close()
        await server.wait_closed()
    assert sets == [[b"SET", s.redis_key("k").encode(), b"1", b"NX", b"PX", b"1500"]]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:6379/0", "'http://'"),
        ("memcached://127.0.0.1", "'memcached://'"),
        ("localhost:6379", "'localhost://'"),
        ("127.0.0.1:6379", "none"),
        ("", "none"),
    ],
)
def test_bad_url_scheme(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RedisStore(url)


def test_bad_socket_timeout() -> None:
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="socket_timeout"):
            RedisStore(socket_timeout=bad)


def test_accepted_url_schemes_do_not_connect(tmp_path: Path) -> None:
    # Something listens where each URL points: making a store must leave it alone.
    path = tmp_path / "r.sock"
    with bound_socket() as tcp, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        tcp.listen(8)
        unix.bind(str(path))
        unix.listen(8)
        port = tcp.getsockname()[1]
        for url in (
            f"redis://{LOOPBACK}:{port}/0",
            f"rediss://u:p@{LOOPBACK}:{port}/1",
            f"unix://{path}",
        ):
            RedisStore(url)
        # A connection made by now, or a moment later, makes its listener readable.
        connected, _, _ = select.select([tcp, unix], [], [], 0.3)
    assert connected == []


def test_imports_without_redis_installed() -> None:
    script = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "from optibase_edge import RedisStore\n"
        "try:\n"
        "    RedisStore()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert 'pip install "optibase-edge[redis]"' in out.stdout


async def test_claim_many_matches_claims_one_by_one(redis_url: str, raw: redis.Redis) -> None:
    prefix = fresh_prefix()
    a, b = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        assert await a.claim("already", 60)
        keys = ["k1", "already", "k2", "k1", "k3"]
        # A pipeline, not a transaction: a repeat inside one call loses like any other.
        assert await b.claim_many(keys, 60) == [True, False, True, False, True]
        assert await a.claim_many(keys, 60) == [False] * 5
        assert await a.claim_many([], 60) == []
        assert 0 < raw.pttl(a.redis_key("k3")) <= 60_000
    finally:
        await a.aclose()
        await b.aclose()


async def test_claim_many_reports_a_dead_server() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    with pytest.raises(redis.RedisError):
        await store.claim_many(["a", "b"], 60)

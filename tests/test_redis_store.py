"""RedisStore against a real redis-server (see tests/support/redis_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import re
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
import redis.asyncio
import redis.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optibase_edge import RedisStore
from tests.support.net import LOOPBACK, bound_socket, free_port
from tests.support.redis_server import RedisServer
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


async def test_claim_is_a_set_nx_px_of_a_token_on_a_bounded_key(
    store: RedisStore, raw: redis.Redis
) -> None:
    long_key = "x" * 1_000_000 + "\ud800"
    assert await store.claim(long_key, 30) is True
    keys = list(raw.scan_iter(match=store.prefix + "*"))
    assert keys == [store.redis_key(long_key).encode()]
    assert len(keys[0]) == len(store.prefix) + 32
    assert re.fullmatch(rb"[0-9a-f]{16}", cast(bytes, raw.get(keys[0])))
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


class LossyRedis:
    """Just enough of a Redis server for claims: SET NX PX and GET, on one dict.

    The first *lose* SETs are recorded and then their connection dropped,
    unanswered: replies lost after the claim was made. Every command it saw is
    in :attr:`seen`.
    """

    def __init__(self, lose: int) -> None:
        self.values: dict[bytes, bytes] = {}
        self.seen: list[list[bytes]] = []
        self.lose = lose

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                assert line.startswith(b"*"), line
                args = []
                for _ in range(int(line[1:])):
                    size = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(size + 2))[:-2])
                self.seen.append(args)
                answer = self._answer(args)
                if args[0].upper() == b"SET" and self.lose > 0:
                    self.lose -= 1
                    break
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()

    def _answer(self, args: list[bytes]) -> bytes:
        command = args[0].upper()
        if command == b"SET":
            if args[1] in self.values:
                return b"_\r\n"  # RESP3 null: the client says HELLO 3
            self.values[args[1]] = args[2]
            return b"+OK\r\n"
        if command == b"GET":
            value = self.values.get(args[1])
            return b"_\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
        return b"+OK\r\n"  # the client's handshake

    def sets(self) -> list[list[bytes]]:
        return [args for args in self.seen if args[0].upper() == b"SET"]


@contextlib.asynccontextmanager
async def lossy_redis(lose: int) -> AsyncIterator[tuple[LossyRedis, str]]:
    fake = LossyRedis(lose)
    server = await asyncio.start_server(fake.handle, LOOPBACK, 0)
    try:
        yield fake, f"redis://{LOOPBACK}:{server.sockets[0].getsockname()[1]}/0"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("client", ["url", "decoding"])
async def test_a_lost_reply_is_resent_once_and_the_claim_recognises_itself(client: str) -> None:
    # A client that resent the SET without reading back its token would take
    # its own claim for someone else's, and the event would never be sent.
    async with lossy_redis(lose=1) as (fake, url):
        ready = redis.asyncio.Redis.from_url(url, decode_responses=True)  # reads str, not bytes
        s = RedisStore(url if client == "url" else ready, prefix="p:", socket_timeout=1)
        try:
            assert await s.claim("k", 1.5) is True
            assert await s.claim("k", 1.5) is False
        finally:
            await s.aclose()
            await ready.aclose()
    first, resent, _ = fake.sets()
    assert first[:2] == [b"SET", s.redis_key("k").encode()]
    assert first[3:] == [b"NX", b"PX", b"1500"]
    assert resent == first  # the same token


async def test_a_claim_that_raised_is_recognised_by_the_next_claim_of_its_key() -> None:
    async with lossy_redis(lose=2) as (fake, url):
        s = RedisStore(url, prefix="p:", socket_timeout=1)
        other = RedisStore(url, prefix="p:", socket_timeout=1)
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                await s.claim("k", 1.5)
            assert len(fake.sets()) == 2  # the one resend, then the error
            assert await other.claim("k", 1.5) is False  # recorded: the others see it taken
            assert await s.claim("k", 1.5) is True  # and this store knows it as its own, once
            assert await s.claim("k", 1.5) is False
        finally:
            await s.aclose()
            await other.aclose()
    assert fake.sets()[3][2] == fake.sets()[0][2]  # the retry reused the lost claim's token


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


# -- a ready client -----------------------------------------------------------------


@pytest.mark.parametrize("decode_responses", [False, True])
async def test_a_ready_client_claims_alongside_a_url_store(
    redis_url: str, decode_responses: bool
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=decode_responses)
    prefix = fresh_prefix()
    given, made = RedisStore(client, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        assert await given.claim_many(["a", "b", "a"], 60) == [True, True, False]
        assert await made.claim_many(["a", "b", "c"], 60) == [False, False, True]
        assert await given.claim("c", 60) is False
        await given.aclose()
        assert await client.ping()  # not the store's to close
    finally:
        await made.aclose()
        await client.aclose()


@pytest.mark.parametrize(
    "client", [redis.Redis(), object(), "not a url"], ids=["sync", "object", "str"]
)
def test_what_is_not_an_asyncio_client_is_refused(client: object) -> None:
    with pytest.raises((TypeError, ValueError), match=r"asyncio|URL scheme"):
        RedisStore(client)  # type: ignore[arg-type]


class ClusterShapedClient:
    """Records claims the way a ``redis.asyncio.RedisCluster`` takes them.

    Its pipeline refuses a transaction and two keys of a command in one call
    (a cluster routes each command by its one key's slot), and answers like a
    server where ``taken`` keys exist with another token.
    """

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.commands: list[tuple[str, ...]] = []
        self.transaction: object = None

    def pipeline(self, transaction: object = None) -> ClusterShapedClient:
        self.transaction = transaction
        if transaction:
            raise redis.exceptions.RedisClusterException("keys in different slots")
        return self

    async def __aenter__(self) -> ClusterShapedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: str, *, nx: bool, px: int) -> None:
        assert nx and px > 0
        self.commands.append(("SET", key, value))

    def get(self, key: str) -> None:
        self.commands.append(("GET", key))

    async def execute(self) -> list[object]:
        replies: list[object] = []
        values = {key: "someone else's" for key in self.taken}
        for command in self.commands:
            if command[0] == "SET":
                created = command[1] not in values
                values.setdefault(command[1], command[2])
                replies.append(True if created else None)
            else:
                replies.append(values[command[1]].encode())
        return replies


async def test_claims_take_the_shape_a_cluster_client_accepts() -> None:
    fake = ClusterShapedClient(taken=set())
    store = RedisStore(fake, prefix="p:")  # type: ignore[arg-type]
    fake.taken = {store.redis_key("taken")}
    assert await store.claim_many(["new", "taken", "other"], 60) == [True, False, True]
    assert fake.transaction is False
    assert [c[:2] for c in fake.commands] == [
        (name, store.redis_key(key)) for key in ("new", "taken", "other") for name in ("SET", "GET")
    ]
    await store.aclose()


# -- a server that dies and comes back ----------------------------------------------


@pytest.mark.parametrize("ready_client", [False, True], ids=["url", "ready-client"])
async def test_claims_work_again_after_redis_is_killed_and_restarted(
    redis_server: RedisServer, ready_client: bool
) -> None:
    client = (
        redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=1) if ready_client else None
    )
    store = RedisStore(client or redis_server.url, prefix="p:", socket_timeout=1)
    try:
        # Several pooled connections, all of which the kill leaves dead.
        assert all(await asyncio.gather(*(store.claim(f"k{i}", 60) for i in range(8))))
        redis_server.kill()
        for _ in range(3):
            with pytest.raises(redis.exceptions.ConnectionError):
                await store.claim("during", 60)
        redis_server.restart()
        # Nothing persisted: every key is new, and each claim gets through the
        # pool's stale connections without an error.
        assert await asyncio.gather(*(store.claim(f"k{i}", 60) for i in range(8))) == [True] * 8
        assert await store.claim_many(["during", "k0"], 60) == [True, False]
    finally:
        await store.aclose()
        if client is not None:
            await client.aclose()

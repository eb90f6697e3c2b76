"""Once-only bookkeeping: MemoryStore (async, expiring) and LocalSeen (sync LRU)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optibase_edge import MemoryStore
from optibase_edge._seen import LocalSeen
from tests.support.stores import BOTH_SITES, FIRST_SITE, conversions_from_two_sites

DAY = 86_400.0


# -- MemoryStore --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_sites_sharing_a_memory_store_send_each_once_only_event_once(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    counts = await conversions_from_two_sites(store, store, tmp_path)
    assert counts == {BOTH_SITES: 1, FIRST_SITE: 1}


def test_memory_store_rejects_zero_size() -> None:
    with pytest.raises(ValueError):
        MemoryStore(maxsize=0)


@pytest.mark.anyio
async def test_first_claim_wins_second_loses() -> None:
    store = MemoryStore()
    assert await store.claim("identify\x1fv1", DAY) is True
    assert await store.claim("identify\x1fv1", DAY) is False
    assert await store.claim("identify\x1fv1", DAY) is False
    assert await store.claim("identify\x1fv2", DAY) is True
    assert len(store) == 2


@pytest.mark.anyio
async def test_concurrent_claims_have_one_winner_per_key() -> None:
    # 50 claimers, half through claim() and half through claim_many(), wait at one start
    # line and go together, each over the same keys in its own order: a store that awaits
    # anything between reading a key and writing it lets two of them win one key.
    store = MemoryStore()
    keys = [f"exposure\x1fv\x1ft{i}" for i in range(10)]
    winners: list[str] = []
    start = anyio.Event()

    async def one_by_one(order: list[str]) -> None:
        await start.wait()
        for key in order:
            if await store.claim(key, DAY):
                winners.append(key)

    async def all_at_once(order: list[str]) -> None:
        await start.wait()
        won = await store.claim_many(order, DAY)
        winners.extend(key for key, first in zip(order, won, strict=True) if first)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            order = keys[i % 10 :] + keys[: i % 10]  # rotated: every key comes first for some
            tg.start_soon(one_by_one if i % 2 else all_at_once, order)
        await anyio.wait_all_tasks_blocked()  # every claimer is at the start line
        start.set()
    assert sorted(winners) == sorted(keys)


@pytest.mark.anyio
async def test_claim_expires() -> None:
    store = MemoryStore()
    assert await store.claim("k", 0.05) is True
    assert await store.claim("k", 0.05) is False
    await anyio.sleep(0.08)
    assert await store.claim("k", 0.05) is True  # expired: claimable again
    assert await store.claim("k", DAY) is False  # and the new claim holds


@pytest.mark.anyio
async def test_losing_claim_does_not_extend_expiry() -> None:
    store = MemoryStore()
    assert await store.claim("k", 0.1) is True
    await anyio.sleep(0.06)
    assert await store.claim("k", DAY) is False  # must not refresh to a day
    await anyio.sleep(0.06)
    assert await store.claim("k", DAY) is True


@pytest.mark.anyio
async def test_memory_store_is_bounded_lru() -> None:
    store = MemoryStore(maxsize=3)
    for key in ("a", "b", "c"):
        assert await store.claim(key, DAY)
    assert await store.claim("a", DAY) is False  # touches "a": now "b" is the oldest
    assert await store.claim("d", DAY) is True
    assert len(store) == 3
    assert await store.claim("b", DAY) is True  # "b" was evicted, so it counts as new
    # now a, d, b: "c" went when "b" came back
    assert await store.claim("a", DAY) is False
    assert await store.claim("c", DAY) is True
    for i in range(100):
        await store.claim(f"x{i}", DAY)
    assert len(store) == 3


@pytest.mark.anyio
async def test_aclose_clears() -> None:
    store = MemoryStore()
    await store.claim("k", DAY)
    await store.aclose()
    assert len(store) == 0


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.text(max_size=10), max_size=60))
def test_memory_store_claims_first_occurrences(keys: list[str]) -> None:
    async def run() -> list[bool]:
        store = MemoryStore()
        return [await store.claim(k, DAY) for k in keys]

    results = anyio.run(run)
    seen: set[str] = set()
    expected = []
    for key in keys:
        expected.append(key not in seen)
        seen.add(key)
    assert results == expected


# -- LocalSeen ----------------------------------------------------------------------------


def test_local_seen_first_time() -> None:
    seen = LocalSeen()
    assert seen.first_time("a") is True
    assert seen.first_time("a") is False
    assert seen.first_time("b") is True
    assert len(seen) == 2


def test_local_seen_recently_used_survives_eviction() -> None:
    seen = LocalSeen(maxsize=3)
    for key in ("a", "b", "c"):
        assert seen.first_time(key)
    assert seen.first_time("a") is False  # "a" is now the most recently used
    assert seen.first_time("d") is True  # evicts "b", the least recently used
    assert len(seen) == 3
    assert seen.first_time("a") is False
    assert seen.first_time("c") is False
    assert seen.first_time("d") is False
    assert seen.first_time("b") is True  # evicted, so new again


def test_local_seen_stays_bounded() -> None:
    seen = LocalSeen(maxsize=10)
    for i in range(1000):
        seen.first_time(f"k{i}")
        assert len(seen) <= 10
    # the last ten are remembered, older ones are not
    assert all(not seen.first_time(f"k{i}") for i in range(990, 1000))
    assert seen.first_time("k0") is True


def test_local_seen_forget() -> None:
    seen = LocalSeen()
    seen.first_time("a")
    seen.first_time("b")
    seen.forget("a")
    assert len(seen) == 1
    assert seen.first_time("a") is True
    assert seen.first_time("b") is False
    seen.forget("never-seen")  # harmless
    assert len(seen) == 2


def test_local_seen_long_and_unicode_keys() -> None:
    seen = LocalSeen()
    long_key = "exposure\x1f" + "x" * 100_000
    assert seen.first_time(long_key)
    assert not seen.first_time(long_key)
    assert seen.first_time(long_key + "y")
    assert seen.first_time("\ud800 lone surrogate")
    assert seen.first_time("🍪")
    assert not seen.first_time("🍪")


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.text(max_size=8), max_size=100))
def test_local_seen_true_exactly_for_first_occurrences(keys: list[str]) -> None:
    seen = LocalSeen(maxsize=1_000)
    previous: set[str] = set()
    for key in keys:
        assert seen.first_time(key) is (key not in previous)
        previous.add(key)
    assert len(seen) == len(previous)


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(st.integers(0, 12).map(str), max_size=80),
    maxsize=st.integers(1, 6),
)
def test_local_seen_matches_an_lru_model(keys: list[str], maxsize: int) -> None:
    seen = LocalSeen(maxsize=maxsize)
    model: list[str] = []  # least recently used first
    for key in keys:
        expected = key not in model
        if not expected:
            model.remove(key)
        model.append(key)
        if len(model) > maxsize:
            model.pop(0)
        assert seen.first_time(key) is expected
        assert len(seen) == len(model)


@pytest.mark.anyio
async def test_memory_store_claim_many_is_claim_in_order() -> None:
    store = MemoryStore()
    assert await store.claim("seen", 60)
    assert await store.claim_many(["a", "seen", "b", "a"], 60) == [True, False, True, False]
    assert await store.claim_many([], 60) == []

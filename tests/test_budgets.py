"""Budgets: token buckets per key in a bounded LRU, on a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optibase_edge._budgets import Budgets

SECOND = 1_000_000_000


class Clock:
    """Nanoseconds, as time.monotonic_ns gives them, moved only by the test."""

    def __init__(self) -> None:
        self.now = 10**18  # far from zero: a real monotonic clock is

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * SECOND)


def spend_all(budgets: Budgets, key: str, times: int) -> list[float]:
    return [budgets.spend(key) for _ in range(times)]


@pytest.mark.parametrize(("burst", "per_second"), [(1, 1.0), (20, 1.0), (500, 20.0), (7, 3.0)])
def test_a_burst_passes_at_once_and_the_next_waits_a_refill(burst: int, per_second: float) -> None:
    clock = Clock()
    budgets = Budgets(burst, per_second, clock=clock)
    assert spend_all(budgets, "k", burst) == [0.0] * burst  # exactly the burst, no float drift
    assert budgets.spend("k") == pytest.approx(1 / per_second)


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    budgets = Budgets(3, 0.5, clock=clock)  # a token every 2 s
    spend_all(budgets, "k", 3)
    clock.advance(1.5)
    assert budgets.spend("k") == pytest.approx(0.5)
    clock.advance(0.5)
    assert budgets.spend("k") == 0.0
    assert budgets.spend("k") == pytest.approx(2.0)
    clock.advance(3600)  # an hour idle fills the bucket, and no more
    assert spend_all(budgets, "k", 4) == [0.0, 0.0, 0.0, pytest.approx(2.0)]


def test_a_refused_spend_takes_nothing() -> None:
    clock = Clock()
    budgets = Budgets(1, 1.0, clock=clock)
    budgets.spend("k")
    for _ in range(1000):  # hammering does not push the next token further away
        assert budgets.spend("k") == pytest.approx(1.0)
    clock.advance(1.0)
    assert budgets.spend("k") == 0.0


def test_keys_have_buckets_of_their_own() -> None:
    budgets = Budgets(2, 1.0, clock=Clock())
    spend_all(budgets, "a", 2)
    assert budgets.spend("a") > 0
    assert spend_all(budgets, "b", 2) == [0.0, 0.0]


@given(keys=st.lists(st.text(max_size=4), max_size=400), maxsize=st.integers(1, 50))
def test_never_more_keys_than_maxsize(keys: list[str], maxsize: int) -> None:
    budgets = Budgets(2, 1.0, maxsize=maxsize, clock=Clock())
    for key in keys:
        budgets.spend(key)
        assert len(budgets) <= maxsize


def test_many_distinct_keys_stay_within_the_bound_and_the_newest_are_kept() -> None:
    clock = Clock()
    budgets = Budgets(1, 0.001, maxsize=100, clock=clock)
    for i in range(10_000):
        assert budgets.spend(f"10.0.{i // 256}.{i % 256}") == 0.0
        assert len(budgets) <= 100
    assert budgets.spend("10.0.39.15") > 0  # the last of them: still known, still spent
    assert budgets.spend("10.0.0.0") == 0.0  # the first: pushed out, so full again


def test_a_key_refused_again_and_again_is_not_the_one_pushed_out() -> None:
    budgets = Budgets(1, 0.001, maxsize=3, clock=Clock())
    budgets.spend("abuser")
    for i in range(10):
        budgets.spend(f"visitor-{i}")
        assert budgets.spend("abuser") > 0  # still refused: a refusal keeps it recent


@pytest.mark.parametrize(
    "arguments", [(0, 1.0, 10), (1, 0.0, 10), (1, -1.0, 10), (1, float("nan"), 10), (1, 1.0, 0)]
)
def test_nonsense_is_refused(arguments: tuple[int, float, int]) -> None:
    burst, per_second, maxsize = arguments
    with pytest.raises(ValueError):
        Budgets(burst, per_second, maxsize=maxsize)

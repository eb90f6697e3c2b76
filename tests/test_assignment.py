"""Assignment: deterministic, uniform, weighted, independent, traffic-stable, sticky."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optibase_edge import MockTransport, Optibase, Outcome, Test, Variant, Visitor
from optibase_edge._assignment import buckets, choose, compile_test
from optibase_edge._cookie import CookieCodec

N = 20_000
IGNORE = MockTransport(lambda batch: Outcome(200))


@pytest.fixture(scope="module")
def visitors() -> list[str]:
    # Real visitor IDs (uuid4); every bound below is at least 8 standard deviations wide.
    return [str(uuid.uuid4()) for _ in range(N)]


def make(
    test_id: str = "hero",
    variants: tuple[str, ...] = ("control", "bold"),
    weights: tuple[float, ...] | None = None,
    **kwargs: object,
) -> Test:
    weights = weights or (1.0,) * len(variants)
    return Test(
        id=test_id,
        variants=[Variant(v, weight=w) for v, w in zip(variants, weights, strict=True)],
        **kwargs,  # type: ignore[arg-type]
    )


def test_deterministic_across_compilations(visitors: list[str]) -> None:
    first = compile_test(make())
    second = compile_test(make())  # a fresh plan (as after a restart) gives the same answer
    assert [choose(first, v) for v in visitors[:2000]] == [
        choose(second, v) for v in visitors[:2000]
    ]


def test_two_equal_arms_are_uniform(visitors: list[str]) -> None:
    plan = compile_test(make())
    counts = Counter(choose(plan, v) for v in visitors)
    assert set(counts) == {"control", "bold"}
    for arm in ("control", "bold"):
        assert 0.47 < counts[arm] / N < 0.53, counts


def test_four_equal_arms_chi_square(visitors: list[str]) -> None:
    arms = ("a", "b", "c", "d")
    plan = compile_test(make(variants=arms))
    counts = Counter(choose(plan, v) for v in visitors)
    expected = N / len(arms)
    chi2 = sum((counts[a] - expected) ** 2 / expected for a in arms)
    # 3 degrees of freedom: P(chi2 > 30) is about 1e-6
    assert chi2 < 30, counts


def test_relative_weights(visitors: list[str]) -> None:
    plan = compile_test(make(weights=(1, 3)))
    counts = Counter(choose(plan, v) for v in visitors)
    assert 0.22 < counts["control"] / N < 0.28, counts
    assert 0.72 < counts["bold"] / N < 0.78, counts


def test_weights_are_relative_not_absolute(visitors: list[str]) -> None:
    small = compile_test(make(weights=(1, 3)))
    large = compile_test(make(weights=(10, 30)))
    sample = visitors[:3000]
    assert [choose(small, v) for v in sample] == [choose(large, v) for v in sample]


def test_independence_between_tests(visitors: list[str]) -> None:
    one = compile_test(make("hero"))
    two = compile_test(make("cta", variants=("blue", "green")))
    joint = Counter((choose(one, v), choose(two, v)) for v in visitors)
    assert len(joint) == 4
    for cell, count in joint.items():
        # each of the four cells should hold about a quarter if the tests are independent
        assert 0.22 < count / N < 0.28, (cell, joint)


def test_same_variant_ids_different_test_ids_are_not_correlated(visitors: list[str]) -> None:
    one = compile_test(make("t1"))
    two = compile_test(make("t2"))
    same = sum(choose(one, v) == choose(two, v) for v in visitors)
    assert 0.47 < same / N < 0.53


def test_traffic_share_and_raising_it_keeps_everyone(visitors: list[str]) -> None:
    low = compile_test(make(traffic=0.3))
    high = compile_test(make(traffic=0.6))
    full = compile_test(make())
    low_in = {v: choose(low, v) for v in visitors}
    high_in = {v: choose(high, v) for v in visitors}
    share_low = sum(x is not None for x in low_in.values()) / N
    share_high = sum(x is not None for x in high_in.values()) / N
    assert 0.28 < share_low < 0.32
    assert 0.58 < share_high < 0.62
    for v, variant in low_in.items():
        if variant is not None:
            assert high_in[v] == variant  # still in, same variant
    for v, variant in high_in.items():
        if variant is not None:
            assert choose(full, v) == variant
    # inside the traffic share, variants are still split evenly
    inside = Counter(x for x in low_in.values() if x is not None)
    assert 0.45 < inside["control"] / sum(inside.values()) < 0.55


def test_zero_traffic_assigns_nobody(visitors: list[str]) -> None:
    plan = compile_test(make(traffic=0))
    assert all(choose(plan, v) is None for v in visitors[:2000])


def returning(ob: Optibase, visitor_id: str, stored: dict[str, str]) -> Visitor:
    """The visitor of a request whose cookie says *visitor_id* was assigned *stored*."""
    token = CookieCodec(ob.settings.signing_keys).encode(visitor_id, stored)
    scope = {"type": "http", "headers": [(b"user-agent", b"Mozilla/5.0")], "path": "/"}
    return Visitor(ob, scope, token)


def test_a_stored_variant_is_kept_when_weights_change(visitors: list[str]) -> None:
    before = compile_test(make(weights=(1, 1)))
    after = Optibase(tests=[make(weights=(1, 99))], transport=IGNORE)
    moved = 0
    for v in visitors[:2000]:
        stored = choose(before, v)
        assert stored is not None
        assert returning(after, v, {"hero": stored}).variant("hero") == stored
        moved += choose(compile_test(make(weights=(1, 99))), v) != stored
    assert moved > 0  # the new weights really would have moved some of them


def test_a_stored_variant_is_kept_when_traffic_drops(visitors: list[str]) -> None:
    ob = Optibase(tests=[make(traffic=0.1)], transport=IGNORE)
    for v in visitors[:500]:
        assert returning(ob, v, {"hero": "bold"}).variant("hero") == "bold"


def test_a_variant_that_no_longer_exists_is_chosen_afresh(visitors: list[str]) -> None:
    test = make(variants=("control", "new"))
    ob = Optibase(tests=[test], transport=IGNORE)
    plan = compile_test(test)
    chosen = {returning(ob, v, {"hero": "removed"}).variant("hero") for v in visitors[:500]}
    assert chosen == {"control", "new"}
    for v in visitors[:500]:
        assert returning(ob, v, {"hero": "removed"}).variant("hero") == choose(plan, v)


def test_seed_changes_reshuffle(visitors: list[str]) -> None:
    plain = compile_test(make())
    seeded = compile_test(make(seed="round-2"))
    same_seed_other_id = compile_test(make("other-id", seed="round-2"))
    sample = visitors[:4000]
    agree = sum(choose(plain, v) == choose(seeded, v) for v in sample) / len(sample)
    assert 0.45 < agree < 0.55  # independent reshuffle, not a relabelling
    # the seed, not the id, is the key: same seed = same assignment
    assert [choose(seeded, v) for v in sample] == [choose(same_seed_other_id, v) for v in sample]
    # seeding with the id is the same as no seed
    explicit = compile_test(make(seed="hero"))
    assert [choose(plain, v) for v in sample] == [choose(explicit, v) for v in sample]


def test_bucket_range_and_purpose_separation(visitors: list[str]) -> None:
    plan = compile_test(make())
    pairs = [buckets(plan, v) for v in visitors[:2000]]
    a, b = [t for t, _ in pairs], [v for _, v in pairs]
    assert all(0 <= x < 1 for x in a + b)
    assert a != b
    assert 0.45 < sum(a) / len(a) < 0.55
    # independent halves: being in the lower half of one says nothing of the other
    both_low = sum(t < 0.5 and v < 0.5 for t, v in pairs) / len(pairs)
    assert 0.2 < both_low < 0.3


variant_ids = st.lists(
    st.text(min_size=1, max_size=20).filter(lambda s: s.strip()),
    min_size=2,
    max_size=6,
    unique=True,
)


@settings(max_examples=150, deadline=None)
@given(
    visitor_id=st.text(),
    ids=variant_ids,
    weights=st.lists(st.floats(0.001, 1000), min_size=6, max_size=6),
    test_id=st.text(min_size=1, max_size=30).filter(lambda s: s.strip()),
    traffic=st.sampled_from([1.0, 0.5]),
)
def test_choose_returns_a_variant_and_is_stable(
    visitor_id: str, ids: list[str], weights: list[float], test_id: str, traffic: float
) -> None:
    test = make(test_id, tuple(ids), tuple(weights[: len(ids)]), traffic=traffic)
    plan = compile_test(test)
    first = choose(plan, visitor_id)
    if traffic == 1.0:
        assert first in ids
    else:
        assert first is None or first in ids
    assert choose(plan, visitor_id) == first
    assert choose(compile_test(test), visitor_id) == first


@settings(max_examples=50, deadline=None)
@given(visitor_id=st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=5))
def test_choose_survives_lone_surrogates(visitor_id: str) -> None:
    plan = compile_test(make())
    assert choose(plan, visitor_id) in ("control", "bold")

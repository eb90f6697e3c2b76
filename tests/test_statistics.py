"""Statistics: every formula pinned against SciPy, on counts from none to a million."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from optibase_edge._statistics import (
    _chi_square_sf,
    difference_interval,
    probability_to_be_best,
    rate,
    relative_uplift,
    sample_ratio_p_value,
    two_proportion_p_value,
    visitors_to_detect,
)

Counts = tuple[int, int]  # (converted, visitors)

# None, none converted, all converted, one short of all, small and large samples.
COUNTS: list[Counts] = [
    (0, 0), (0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (0, 1000), (50, 1000), (1000, 1000),
    (5_000, 100_000), (50_000, 1_000_000), (60_000, 1_000_000), (0, 1_000_000),
    (999_999, 1_000_000), (1_000_000, 1_000_000),
]  # fmt: skip
PAIRS = list(itertools.product(COUNTS, repeat=2))  # (variant, control)
Z_ALPHA = float(stats.norm.ppf(0.975))
Z_POWER = float(stats.norm.ppf(0.80))

# (converted, visitors) up to a million, each value equally likely to be small or large.
counts_strategy = st.integers(0, 6).flatmap(
    lambda digits: st.integers(0, 10**digits).flatmap(
        lambda n: st.tuples(st.integers(0, n), st.just(n))
    )
)


def assert_p_close(p: float | None, reference: float) -> None:
    """Equal to 1e-9 relative; both below 1e-300 counts as equal (a double's tail underflows)."""
    assert p is not None
    assert p == pytest.approx(reference, rel=1e-9, abs=1e-300)


# rate, relative_uplift, difference_interval


@pytest.mark.parametrize(("converted", "visitors"), COUNTS)
def test_rate(converted: int, visitors: int) -> None:
    assert rate(converted, visitors) == (converted / visitors if visitors else None)


@pytest.mark.parametrize(("variant", "control"), PAIRS)
def test_relative_uplift_is_the_exact_ratio_less_one(variant: Counts, control: Counts) -> None:
    uplift = relative_uplift(*variant, *control)
    if not variant[1] or not control[0]:  # no rate, or a control rate of 0 (no visitors too)
        assert uplift is None
    else:
        exact = Fraction(*variant) / Fraction(*control) - 1
        assert uplift == pytest.approx(float(exact), rel=1e-15, abs=1e-15)


@pytest.mark.parametrize(("variant", "control"), PAIRS)
def test_difference_interval_is_the_unpooled_wald_interval(
    variant: Counts, control: Counts
) -> None:
    interval = difference_interval(*variant, *control)
    if not variant[1] or not control[1]:
        assert interval is None
        return
    p1, p0 = variant[0] / variant[1], control[0] / control[1]
    se = math.sqrt(p1 * (1 - p1) / variant[1] + p0 * (1 - p0) / control[1])
    reference = (p1 - p0 - Z_ALPHA * se, p1 - p0 + Z_ALPHA * se)
    assert interval == pytest.approx(reference, rel=1e-12, abs=1e-15)


def test_difference_interval_has_no_width_without_variance() -> None:
    assert difference_interval(0, 10, 0, 20) == (0.0, 0.0)
    assert difference_interval(10, 10, 0, 20) == (1.0, 1.0)


# two_proportion_p_value


def pooled_z(variant: Counts, control: Counts) -> float:
    pooled = (variant[0] + control[0]) / (variant[1] + control[1])
    se = math.sqrt(pooled * (1 - pooled) * (1 / variant[1] + 1 / control[1]))
    return (variant[0] / variant[1] - control[0] / control[1]) / se


def has_pooled_variance(variant: Counts, control: Counts) -> bool:
    return bool(variant[1] and control[1]) and 0 < variant[0] + control[0] < variant[1] + control[1]


@pytest.mark.parametrize(("variant", "control"), PAIRS)
def test_p_value_is_the_pooled_two_sided_z_test(variant: Counts, control: Counts) -> None:
    p = two_proportion_p_value(*variant, *control)
    if not has_pooled_variance(variant, control):
        assert p is None
        return
    assert_p_close(p, 2 * float(stats.norm.sf(abs(pooled_z(variant, control)))))
    # The same test as Pearson's chi-square on the 2x2 table, SciPy's formula rather than ours.
    table = [[variant[0], variant[1] - variant[0]], [control[0], control[1] - control[0]]]
    assert_p_close(p, float(stats.chi2_contingency(table, correction=False).pvalue))


def test_a_tiny_p_value_keeps_its_digits() -> None:
    p = two_proportion_p_value(60_000, 1_000_000, 50_000, 1_000_000)
    assert p is not None
    assert 1e-250 < p < 1e-150  # a z of 31: 1 - cdf would have said 0.0
    assert_p_close(p, 2 * float(stats.norm.sf(pooled_z((60_000, 1_000_000), (50_000, 1_000_000)))))


@settings(max_examples=150, deadline=None)
@given(variant=counts_strategy, control=counts_strategy)
def test_p_value_is_a_probability_and_the_same_either_way_round(
    variant: Counts, control: Counts
) -> None:
    p = two_proportion_p_value(*variant, *control)
    assert p == two_proportion_p_value(*control, *variant)
    if not has_pooled_variance(variant, control):
        assert p is None
        return
    reference = 2 * float(stats.norm.sf(abs(pooled_z(variant, control))))
    assert p is not None
    assert 0.0 < p <= 1.0 or (p == 0.0 and reference < 1e-300)
    assert_p_close(p, reference)


# visitors_to_detect


def power(p1: float, p0: float, n: int) -> float:
    """The power of the two-sided 5% z-test with n visitors a group, at true rates p1 and p0."""
    mean = (p0 + p1) / 2
    excess = abs(p1 - p0) * math.sqrt(n) - Z_ALPHA * math.sqrt(2 * mean * (1 - mean))
    sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    if not sd:  # rates of 0 and 1: the outcome is certain
        return 1.0 if excess > 0 else 0.0
    return float(stats.norm.cdf(excess / sd))


def check_visitors_to_detect(variant: Counts, control: Counts) -> None:
    more = visitors_to_detect(*variant, *control)
    p1, p0 = rate(*variant), rate(*control)
    if p1 is None or p0 is None or p1 == p0:
        assert more is None
        return
    assert more is not None
    total = min(variant[1], control[1]) + more
    assert power(p1, p0, total) >= 0.80
    if more:
        assert power(p1, p0, total - 1) < 0.80


@pytest.mark.parametrize(("variant", "control"), PAIRS)
def test_visitors_to_detect_is_the_least_that_reaches_80_percent_power(
    variant: Counts, control: Counts
) -> None:
    check_visitors_to_detect(variant, control)


@settings(max_examples=150, deadline=None)
@given(variant=counts_strategy, control=counts_strategy)
def test_visitors_to_detect_reaches_80_percent_power_and_not_one_sooner(
    variant: Counts, control: Counts
) -> None:
    check_visitors_to_detect(variant, control)


def test_visitors_to_detect_counts_from_the_smaller_variant() -> None:
    needed = visitors_to_detect(60, 1000, 50, 1000)  # 6% against 5%: some 7,000 a variant
    assert needed is not None
    assert visitors_to_detect(120, 2000, 50, 1000) == needed
    assert visitors_to_detect(120, 2000, 100, 2000) == needed - 1000
    assert visitors_to_detect(600, 10_000, 500, 10_000) == 0


# sample_ratio_p_value

OBSERVED = [
    [1, 0], [500, 500], [520, 480], [510_000, 490_000], [520_000, 480_000], [1_000_000, 0],
    [10, 20, 30], [333_000, 333_500, 333_500], [100, 100, 100, 100], [1, 2, 3, 4, 5],
    [1000, 1010, 990, 1005, 995, 1001], [10**6, 10**6 + 5000, 10**6 - 3000, 10**6, 10**6],
    [7, 0, 0, 0, 0, 0],
]  # fmt: skip
WEIGHTINGS: dict[str, Callable[[int], list[float]]] = {
    "equal": lambda k: [1.0] * k,
    "rising": lambda k: [float(i) for i in range(1, k + 1)],
    "tenths": lambda k: [0.1] * k,
}


@pytest.mark.parametrize("observed", OBSERVED)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_sample_ratio_p_value_is_scipys_chisquare(observed: list[int], weighting: str) -> None:
    weights = WEIGHTINGS[weighting](len(observed))
    total = sum(observed)
    expected = [total * w / sum(weights) for w in weights]
    reference = float(stats.chisquare(observed, expected).pvalue)
    assert_p_close(sample_ratio_p_value(observed, weights), reference)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(
    "x", [1e-12, 1e-3, 0.5, 1.0, 2.0, 3.9, 10.0, 37.0, 100.0, 700.0, 1400.0, 1e5, 1e12, 1e300]
)
def test_the_chi_square_tail_is_scipys_far_into_the_tail(df: int, x: float) -> None:
    assert_p_close(_chi_square_sf(x, df), float(stats.chi2.sf(x, df)))


@settings(max_examples=60, deadline=None)
@given(
    observed=st.lists(st.integers(0, 10**6), min_size=2, max_size=6),
    weights=st.lists(st.floats(0.01, 100.0), min_size=6, max_size=6),
)
def test_sample_ratio_p_value_is_a_probability_and_scipys(
    observed: list[int], weights: list[float]
) -> None:
    weights = weights[: len(observed)]
    p = sample_ratio_p_value(observed, weights)
    assert 0.0 <= p <= 1.0
    total = sum(observed)
    if total:
        expected = [total * w / sum(weights) for w in weights]
        assert_p_close(p, float(stats.chisquare(observed, expected).pvalue))


def test_sample_ratio_p_value_is_1_with_nothing_to_compare() -> None:
    assert sample_ratio_p_value([0, 0, 0], [1.0, 2.0, 3.0]) == 1.0
    assert sample_ratio_p_value([7], [0.3]) == 1.0  # where 7 * 0.3 / 0.3 is not 7
    assert sample_ratio_p_value([], []) == 1.0
    assert sample_ratio_p_value([500, 500], [1.0, 1.0]) == 1.0


@pytest.mark.parametrize(
    "weights", [[1.0], [1.0, 1.0, 1.0], [1.0, 0.0], [1.0, -1.0], [1.0, math.nan], [1.0, math.inf]]
)
def test_sample_ratio_p_value_refuses_weights_that_are_no_split(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        sample_ratio_p_value([10, 12], weights)


# probability_to_be_best


def beta_parameters(counts: Counts) -> tuple[int, int]:
    converted, visitors = counts
    return 1 + converted, 1 + visitors - converted


def beats(a_x: int, b_x: int, a_y: int, b_y: int) -> float:
    """P(Y > X) for independent X ~ Beta(a_x, b_x), Y ~ Beta(a_y, b_y), a_y whole, in closed form.

    1 - I_t(a_y, b_y) = P(Binomial(n, t) < a_y) with n = a_y + b_y - 1, so
    P(Y > X) = sum over i < a_y of C(n, i) B(a_x + i, b_x + n - i) / B(a_x, b_x).
    """
    n = a_y + b_y - 1
    i = np.arange(a_y)
    terms = (
        special.betaln(a_x + i, b_x + n - i)
        - special.betaln(a_x, b_x)
        - special.betaln(i + 1, n - i + 1)
        - math.log(n + 1)
    )
    return float(np.exp(terms).sum())


def exact_two(first: Counts, second: Counts) -> tuple[float, float]:
    """P(first best), P(second best), by the closed form with the fewest terms."""
    (a0, b0), (a1, b1) = beta_parameters(first), beta_parameters(second)
    # The sum runs over the whole parameter of Y: swap the variants, or read both rates
    # as failure rates (1 - X ~ Beta(b, a)), to make that the smallest of the four.
    forms = [
        (a1, lambda: beats(a0, b0, a1, b1)),
        (a0, lambda: 1 - beats(a1, b1, a0, b0)),
        (b0, lambda: beats(b1, a1, b0, a0)),
        (b1, lambda: 1 - beats(b0, a0, b1, a1)),
    ]
    second_best = min(forms, key=lambda form: form[0])[1]()
    return 1 - second_best, second_best


def quad_reference(counts: list[Counts]) -> tuple[float, ...]:
    """Each P(i best) by QUADPACK on i's mass, mean +- 50 sd, cut at each mean and +- 3, 10 sd."""
    params = [beta_parameters(c) for c in counts]
    means = [float(stats.beta.mean(a, b)) for a, b in params]
    sds = [float(stats.beta.std(a, b)) for a, b in params]
    marks = [m + t * sd for m, sd in zip(means, sds, strict=True) for t in (-10, -3, 0, 3, 10)]

    def integrand(x: float, i: int) -> float:
        value = float(stats.beta.pdf(x, *params[i]))
        for j, (a, b) in enumerate(params):
            if j != i:
                value *= float(stats.beta.cdf(x, a, b))
        return value

    results = []
    for i, (mean, sd) in enumerate(zip(means, sds, strict=True)):
        lo, hi = max(0.0, mean - 50 * sd), min(1.0, mean + 50 * sd)
        cuts = [lo, *sorted(m for m in marks if lo < m < hi), hi]
        pieces = [
            integrate.quad(integrand, a, b, args=(i,), epsabs=1e-13, epsrel=1e-12, limit=200)[0]
            for a, b in itertools.pairwise(cuts)
        ]
        results.append(sum(pieces))
    return tuple(results)


TWO_WAY = [
    ((0, 0), (0, 0)), ((0, 0), (50_000, 1_000_000)), ((0, 10), (10, 10)), ((5, 100), (7, 100)),
    ((0, 1_000_000), (1_000_000, 1_000_000)), ((1_000_000, 1_000_000), (999_999, 1_000_000)),
    ((50_000, 1_000_000), (50_300, 1_000_000)), ((10_000, 1_000_000), (500_000, 1_000_000)),
    ((0, 1), (1, 1)), ((3, 7), (0, 0)), ((49, 1000), (500, 10_000)),
]  # fmt: skip
MANY_WAY = [
    [(0, 0), (1, 1), (0, 1)],
    [(0, 1_000_000), (0, 1_000_000), (1, 1_000_000)],
    [(50, 1000), (60, 1000), (55, 1000), (40, 1000)],
    [(50_000, 1_000_000), (50_400, 1_000_000), (50_200, 1_000_000), (49_800, 1_000_000)],
    [(3, 7), (0, 0), (40, 100), (400, 1000), (45_000, 100_000)],
    [(1, 2), (3, 4), (0, 3), (5, 5), (2, 9)],
    [(0, 0), (500, 1000), (50_000, 100_000), (500_000, 1_000_000)],
    [(1000, 1000), (0, 1000), (999, 1000)],
]


@pytest.mark.parametrize(("first", "second"), TWO_WAY)
def test_probability_to_be_best_of_two_is_the_closed_form(first: Counts, second: Counts) -> None:
    assert probability_to_be_best([first, second]) == pytest.approx(
        exact_two(first, second), abs=1e-8
    )


@pytest.mark.parametrize("counts", [*map(list, TWO_WAY[:6]), *MANY_WAY])
def test_probability_to_be_best_is_scipys_integral(counts: list[Counts]) -> None:
    assert probability_to_be_best(counts) == pytest.approx(quad_reference(counts), abs=1e-8)


@pytest.mark.parametrize(
    "counts", [(37, 100), (5000, 100_000), (50_000, 1_000_000), (500_000, 1_000_000)]
)
def test_against_no_data_the_chance_to_be_best_is_the_posterior_mean(counts: Counts) -> None:
    # P(X > U) for U uniform is E[X] = (converted + 1) / (visitors + 2): exact, so this
    # holds the integral to a tighter bound than a quadrature reference can.
    result = probability_to_be_best([counts, (0, 0)])
    assert result[0] == pytest.approx(float(Fraction(counts[0] + 1, counts[1] + 2)), abs=3e-11)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("counts", [(0, 0), (0, 500), (7, 7), (50_000, 1_000_000)])
def test_equal_variants_share_equally(k: int, counts: Counts) -> None:
    assert probability_to_be_best([counts] * k) == pytest.approx([1 / k] * k, abs=1e-12)


def test_far_apart_is_all_or_nothing() -> None:
    assert probability_to_be_best([(10_000, 1_000_000), (500_000, 1_000_000)]) == (0.0, 1.0)


def test_one_variant_is_best_and_none_is_nothing() -> None:
    assert probability_to_be_best([(3, 10)]) == (1.0,)
    assert probability_to_be_best([]) == ()


@settings(max_examples=20, deadline=None)
@given(counts=st.lists(counts_strategy, min_size=2, max_size=3))
def test_probability_to_be_best_of_any_counts_is_scipys_integral(counts: list[Counts]) -> None:
    assert probability_to_be_best(counts) == pytest.approx(quad_reference(counts), abs=1e-8)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(counts_strategy, min_size=2, max_size=5), data=st.data())
def test_probability_to_be_best_sums_to_1_whatever_the_order(
    counts: list[Counts], data: st.DataObject
) -> None:
    result = probability_to_be_best(counts)
    assert all(0.0 <= p <= 1.0 for p in result)
    assert sum(result) == pytest.approx(1.0, abs=1e-14)  # scaled to, not merely near
    order = data.draw(st.permutations(range(len(counts))))
    shuffled = probability_to_be_best([counts[i] for i in order])
    assert shuffled == pytest.approx([result[i] for i in order], abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(counts_strategy, min_size=2, max_size=4), data=st.data())
def test_more_conversions_never_lower_the_probability_to_be_best(
    counts: list[Counts], data: st.DataObject
) -> None:
    converted, visitors = counts[0]
    more = data.draw(st.integers(converted, visitors))
    before = probability_to_be_best(counts)[0]
    after = probability_to_be_best([(more, visitors), *counts[1:]])[0]
    assert after >= before - 1e-9

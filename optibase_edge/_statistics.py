"""A/B test statistics: exact formulas, pure functions, the standard library only.

Counts come per variant as ``converted`` (visitors who converted) and ``visitors``,
the control's as ``control_converted`` and ``control_visitors``: non-negative
integers with ``converted <= visitors``, which the caller guarantees.

Contracts:

* Where a number is undefined (no visitors, a zero control rate, no variance,
  equal rates) the function returns ``None``: never NaN, never an exception.
  Only :func:`sample_ratio_p_value` raises, on weights that are not a
  distribution over its variants.
* The levels are constants, not options: 95% intervals, two-sided alpha 0.05,
  80% power. A number means the same thing on every report.
* The interval, the p-values and the sample size are the textbook normal and
  chi-square ones; the probability to be best is Bayesian, from uniform priors,
  and the one number integrated numerically.
* P-values are computed as tails (``erfc``, sums of logs), never as ``1 - cdf``,
  so a tiny one keeps its digits; it underflows to 0.0 only below about 1e-300.
* tests/test_statistics.py pins every function against SciPy: p-values to 1e-9
  relative, the probability to be best to 1e-8 absolute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from statistics import NormalDist
from typing import Final, NamedTuple

SRM_THRESHOLD: Final = 0.001  # a sample-ratio p-value below this is a warning

_Z_ALPHA: Final = NormalDist().inv_cdf(0.975)  # two-sided 5%
_Z_POWER: Final = NormalDist().inv_cdf(0.80)
# A posterior is integrated where its log density is within this of its peak:
# the mass left outside is below 1e-15 whatever its shape (normal or exponential).
_LOG_DENSITY_SPAN: Final = 36.0
# Each 8-point Gauss-Legendre panel spans at most this many standard deviations of
# the narrowest posterior in play: over a wide grid of counts, the integral then
# agrees with panels three times narrower to 2e-10. (Composite Simpson's error
# falls only as step^4 where a posterior's mass lies against 0 or 1: even at four
# times the nodes it was off by 3e-7 there.)
_PANEL: Final = 1.5
_MAX_TERMS: Final = 1_000_000


def rate(converted: int, visitors: int) -> float | None:
    """The conversion rate."""
    return converted / visitors if visitors else None


def relative_uplift(
    converted: int, visitors: int, control_converted: int, control_visitors: int
) -> float | None:
    """rate / control rate - 1."""
    if not visitors or not control_visitors or not control_converted:
        return None
    # One correctly rounded division of integers rather than a quotient of two rounded rates.
    return converted * control_visitors / (visitors * control_converted) - 1


def difference_interval(
    converted: int, visitors: int, control_converted: int, control_visitors: int
) -> tuple[float, float] | None:
    """The 95% interval of rate - control rate (unpooled Wald)."""
    if not visitors or not control_visitors:
        return None
    p1, p0 = converted / visitors, control_converted / control_visitors
    half = _Z_ALPHA * math.sqrt(p1 * (1 - p1) / visitors + p0 * (1 - p0) / control_visitors)
    return p1 - p0 - half, p1 - p0 + half


def two_proportion_p_value(
    converted: int, visitors: int, control_converted: int, control_visitors: int
) -> float | None:
    """The two-sided p-value of the pooled two-proportion z-test."""
    total = visitors + control_visitors
    if not visitors or not control_visitors or converted + control_converted in (0, total):
        return None  # no variance under the null
    pooled = (converted + control_converted) / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / visitors + 1 / control_visitors))
    z = (converted / visitors - control_converted / control_visitors) / se
    return math.erfc(abs(z) / math.sqrt(2))


def visitors_to_detect(
    converted: int, visitors: int, control_converted: int, control_visitors: int
) -> int | None:
    """How many more visitors each variant needs for 80% power to detect the observed effect.

    The classic two-proportion sample size (pooled variance under the null,
    unpooled under the alternative, no continuity correction), less the
    visitors the smaller variant already has.
    """
    p1, p0 = rate(converted, visitors), rate(control_converted, control_visitors)
    if p1 is None or p0 is None or p1 == p0:
        return None
    mean = (p0 + p1) / 2
    null_sd = math.sqrt(2 * mean * (1 - mean))
    alternative_sd = math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    needed = math.ceil(((_Z_ALPHA * null_sd + _Z_POWER * alternative_sd) / (p1 - p0)) ** 2)
    return max(0, needed - min(visitors, control_visitors))


def sample_ratio_p_value(visitors: Sequence[int], weights: Sequence[float]) -> float:
    """The chi-square goodness-of-fit p-value of visitors per variant against their weights."""
    if len(visitors) != len(weights):
        raise ValueError(f"{len(visitors)} visitor counts for {len(weights)} weights")
    if not all(0 < w < math.inf for w in weights):
        raise ValueError(f"weights must be positive and finite: {list(weights)}")
    total = sum(visitors)
    if not total or len(visitors) == 1:
        return 1.0  # nothing to compare (and one variant's expected count may round off)
    weight_sum = sum(weights)
    expected = [total * w / weight_sum for w in weights]
    statistic = sum((n - e) ** 2 / e for n, e in zip(visitors, expected, strict=True))
    return _chi_square_sf(statistic, len(visitors) - 1)


def probability_to_be_best(counts: Sequence[tuple[int, int]]) -> tuple[float, ...]:
    """P(variant i has the highest rate), for (converted, visitors) per variant.

    Each rate has the posterior Beta(1 + converted, 1 + visitors - converted)
    (a uniform prior), independent of the others, and
    P(i best) = integral of f_i(x) * product over j != i of F_j(x) dx,
    f the density and F the distribution function. All of them are integrated
    on one grid: from where the last posterior starts to have mass (below, some
    F_j is nil) to where the last one stops, cut wherever a posterior starts or
    stops, each piece in Gauss-Legendre panels no wider than _PANEL standard
    deviations of the narrowest posterior still in play there. Past its mass a
    posterior's F is 1. The results are scaled to sum to 1.
    """
    if len(counts) < 2:
        return (1.0,) * len(counts)
    posteriors = [_posterior(converted, visitors) for converted, visitors in counts]
    start = max(p.lo for p in posteriors)
    cuts = sorted({start} | {x for p in posteriors for x in (p.lo, p.hi) if x > start})
    totals = [0.0] * len(posteriors)
    for left, right in pairwise(cuts):
        narrowest = min(p.sd for p in posteriors if p.hi >= right)
        for x, weight in _nodes(left, right, narrowest):
            log_x, log_1mx = math.log(x), math.log1p(-x)
            densities, cdfs = [], []
            for p in posteriors:
                if x > p.hi:
                    densities.append(0.0)
                    cdfs.append(1.0)
                else:
                    density = math.exp((p.a - 1) * log_x + (p.b - 1) * log_1mx - p.log_beta)
                    densities.append(density)
                    cdfs.append(_beta_cdf(x, density, p))
            for i, density in enumerate(densities):
                if density:
                    for j, cdf in enumerate(cdfs):
                        if j != i:
                            density *= cdf
                    totals[i] += weight * density
    total = sum(totals)
    return tuple(t / total for t in totals)


def _chi_square_sf(x: float, df: int) -> float:
    """P(X > x) for X chi-square with a whole number df >= 1 of degrees of freedom.

    The upper incomplete gamma Q(df/2, x/2) steps down by whole numbers to
    Q(1/2, y) = erfc(sqrt(y)) or Q(0, y) = 0, each step adding a Poisson-like
    term y^s e^-y / Gamma(s + 1), summed here in logs so that neither y^s nor e^-y
    overflows or underflows on its own.
    """
    if x <= 0:
        return 1.0
    y = x / 2
    log_y = math.log(y)
    half = (df % 2) / 2
    tail = math.erfc(math.sqrt(y)) if half else 0.0
    for s in range(df // 2):
        tail += math.exp((half + s) * log_y - y - math.lgamma(half + s + 1))
    return min(1.0, tail)  # rounding may push a near-certain tail a hair above 1


class _Posterior(NamedTuple):
    """Beta(a, b) for one variant, with what integrating it needs, worked out once."""

    a: float
    b: float
    log_beta: float  # ln B(a, b)
    switch: float  # above this x, I_x(a, b) is taken as 1 - I_(1-x)(b, a)
    lo: float  # where it has mass
    hi: float
    sd: float


def _posterior(converted: int, visitors: int) -> _Posterior:
    failed = visitors - converted
    a, b = converted + 1.0, failed + 1.0
    lo, hi = 0.0, 1.0
    if visitors:
        # ln of the density, up to a constant: concave, its peak at the observed rate.
        def log_density(x: float) -> float:
            return converted * math.log(x) + failed * math.log1p(-x)

        peak = converted / visitors
        floor = sum(k * math.log(k / visitors) for k in (converted, failed) if k)
        floor -= _LOG_DENSITY_SPAN
        if converted:
            lo = _crossing(log_density, floor, peak, 0.0)
        if failed:
            hi = _crossing(log_density, floor, peak, 1.0)
    sd = math.sqrt(a * b / (a + b + 1)) / (a + b)
    # At a million visitors lgamma(a + b) is near 1e7, so this carries some 1e-9 of
    # rounding, which every density and F would inherit: instead the density is
    # scaled to integrate to exactly 1 on the rule probability_to_be_best uses.
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_beta += math.log(
        sum(
            weight * math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_beta)
            for x, weight in _nodes(lo, hi, sd)
        )
    )
    return _Posterior(a, b, log_beta, (a + 1) / (a + b + 2), lo, hi, sd)


def _nodes(left: float, right: float, sd: float) -> Iterator[tuple[float, float]]:
    """Gauss-Legendre (node, weight) pairs on [left, right], in panels at most _PANEL sd wide."""
    panels = math.ceil((right - left) / (_PANEL * sd))
    width = (right - left) / panels
    for panel in range(panels):
        for node, weight in _GAUSS_LEGENDRE:
            x = left + (panel + node) * width
            if x < 1.0:  # else rounded up, in a piece an ulp or two wide: nothing there to add
                yield x, weight * width


def _crossing(f: Callable[[float], float], floor: float, inside: float, outside: float) -> float:
    """Where f, above floor at inside and falling towards outside, crosses it; to the last bit."""
    while True:
        middle = (inside + outside) / 2
        if middle in (inside, outside):
            return outside
        if f(middle) < floor:
            outside = middle
        else:
            inside = middle


def _beta_cdf(x: float, density: float, p: _Posterior) -> float:
    """The regularized incomplete beta I_x(a, b), by its continued fraction, given the density."""
    # x^a (1-x)^b / B(a, b), the factor in front of the fraction
    front = density * x * (1 - x)
    if x > p.switch:
        return 1 - front / p.b * _beta_fraction(1 - x, p.b, p.a)
    return front / p.a * _beta_fraction(x, p.a, p.b)


def _beta_fraction(x: float, a: float, b: float) -> float:
    """1 / (1 + d1 / (1 + d2 / (1 + ...))), the continued fraction of I_x(a, b), by Lentz.

    It converges quickly for x below (a + 1) / (a + b + 2), where it is used.
    There no denominator comes near zero (none falls below 2 / (a + b + 2), the
    least the first can be, over a wide random grid), so the guard against one of
    the modified Lentz method is left out of the hot loop.
    """
    a_plus_b = a + b
    product, c, d = 1.0, 1.0, 0.0
    # It takes some 3,800 terms at a billion visitors; the bound only stops a NaN looping.
    for m in range(_MAX_TERMS):
        step = -(a + m) * (a_plus_b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 / (1 + step * d)
        c = 1 + step / c
        product *= c * d
        step = (m + 1) * (b - m - 1) * x / ((a + 2 * m + 1) * (a + 2 * m + 2))
        d = 1 / (1 + step * d)
        c = 1 + step / c
        change = c * d
        product *= change
        if abs(change - 1) < 1e-15:
            return 1 / product
    raise ArithmeticError(f"the incomplete beta fraction did not converge at {x}, {a}, {b}")


def _gauss_legendre(n: int) -> tuple[tuple[float, float], ...]:
    """The n-point Gauss-Legendre rule on [0, 1]: (node, weight) pairs.

    The nodes are the roots of the Legendre polynomial P_n, by Newton's method
    from the usual cosine guesses.
    """
    rule = []
    for k in range(1, n + 1):
        t = math.cos(math.pi * (k - 0.25) / (n + 0.5))
        for _ in range(8):
            below, value = 1.0, t  # P_(m-1)(t), P_m(t), by Bonnet's recurrence up to m = n
            for m in range(2, n + 1):
                below, value = value, ((2 * m - 1) * t * value - (m - 1) * below) / m
            slope = n * (t * value - below) / (t * t - 1)
            t -= value / slope
        rule.append(((1 - t) / 2, 1 / ((1 - t * t) * slope * slope)))
    return tuple(rule)


_GAUSS_LEGENDRE: Final = _gauss_legendre(8)

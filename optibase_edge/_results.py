"""Results per test and variant, from Segment messages: who converts, and who is winning.

Attribution, the contract every figure rests on:

* A visitor is an ``anonymousId``. It counts for a variant when an
  "Experiment Viewed" for that test and variant exists for it (properties
  ``test_id``/``variant_id``, or the Segment A/B spec's ``experiment_id``/
  ``variation_id``), whenever it happened.
* A visitor converts when a "Conversion Triggered" carries its
  ``anonymousId``, or carries a ``userId`` that an Identify linked to that
  ``anonymousId`` (an Identify carrying both). A user's conversion therefore
  counts for every visitor linked to the user.
* A conversion counts for every variant its visitor was exposed to, at most
  once per visitor and conversion id, however many times it fired; the
  ``variants`` property of the conversion is not needed. Conversions of
  visitors never exposed to a test count for none of its variants.

Messages are mappings as Segment receives them; anything else in them, and
messages that are not one of the three, are ignored. The control is the
test's first configured variant; without a configuration, the variant called
``control`` if there is one, else the first by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._config import Conversion, Test
from ._statistics import (
    SRM_THRESHOLD,
    difference_interval,
    probability_to_be_best,
    rate,
    relative_uplift,
    sample_ratio_p_value,
    two_proportion_p_value,
    visitors_to_detect,
)

EXPERIMENT_VIEWED: Final = "Experiment Viewed"
CONVERSION_TRIGGERED: Final = "Conversion Triggered"
SIGNIFICANCE: Final = 0.05
"""A comparison with a p-value below this is clear; above it, more visitors are needed."""


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """One conversion for one variant; comparison fields are None for the control."""

    converted: int
    """Visitors of the variant who converted at least once."""
    rate: float | None
    uplift: float | None
    difference: float | None
    """``rate - control_rate``, absolute."""
    ci_low: float | None
    ci_high: float | None
    """The 95 % interval of ``rate - control_rate`` (absolute)."""
    p_value: float | None
    p2bb: float
    """Probability that this variant has the highest rate of the test's variants."""
    more_visitors: int | None
    """Visitors per variant still needed to detect the observed effect (None: not detectable)."""

    @property
    def clear(self) -> bool:
        """Whether the difference from the control is significant at 5 %."""
        return self.p_value is not None and self.p_value < SIGNIFICANCE


@dataclass(frozen=True, slots=True)
class VariantResult:
    variant_id: str
    name: str | None
    control: bool
    visitors: int
    conversions: Mapping[str, ConversionResult]


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False  # not a pytest test class

    test_id: str
    name: str | None
    srm_p_value: float
    variants: tuple[VariantResult, ...]
    conversions: tuple[tuple[str, str | None], ...]
    """(conversion id, name) in order: configured ones first, then the others by id."""

    @property
    def srm_warning(self) -> bool:
        """Whether the split of visitors is too unlikely under the configured weights."""
        return self.srm_p_value < SRM_THRESHOLD


@dataclass(frozen=True, slots=True)
class Results:
    """What :func:`experiment_results` found, test by test."""

    tests: tuple[TestResult, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``optibase-edge report --json`` document (see the README for its schema)."""
        return {
            "tests": [
                {
                    "test_id": test.test_id,
                    "srm_p_value": test.srm_p_value,
                    "srm_warning": test.srm_warning,
                    "variants": [
                        {
                            "variant_id": variant.variant_id,
                            "control": variant.control,
                            "visitors": variant.visitors,
                            "conversions": {
                                conversion_id: {
                                    "visitors": result.converted,
                                    "rate": result.rate,
                                    "uplift": result.uplift,
                                    "ci_low": result.ci_low,
                                    "ci_high": result.ci_high,
                                    "p_value": result.p_value,
                                    "p2bb": result.p2bb,
                                }
                                for conversion_id, result in variant.conversions.items()
                            },
                        }
                        for variant in test.variants
                    ],
                }
                for test in self.tests
            ]
        }


class _Tally:
    """Exposures, identity links and conversions, gathered one message at a time.

    Conversions are resolved at the end because the Identify linking a user
    to a visitor may come after the user's conversion.
    """

    __slots__ = ("_conversions", "_exposed", "_links", "_visitors_of")

    def __init__(self) -> None:
        self._exposed: dict[str, dict[str, set[str]]] = {}  # test -> variant -> visitors
        self._visitors_of: dict[str, set[tuple[str, str]]] = {}  # visitor -> (test, variant)
        self._links: dict[str, set[str]] = {}  # user -> visitors
        self._conversions: dict[str, tuple[set[str], set[str]]] = {}  # id -> (visitors, users)

    def add(self, message: Mapping[str, Any]) -> None:
        """Count one Segment message (a track or an identify; others are ignored)."""
        visitor = _text(message.get("anonymousId"))
        user = _text(message.get("userId"))
        kind = message.get("type", "track" if "event" in message else None)
        if kind == "identify":
            if visitor and user:
                self._links.setdefault(user, set()).add(visitor)
            return
        if kind != "track":
            return
        properties = message.get("properties")
        if not isinstance(properties, Mapping):
            return
        event = message.get("event")
        if event == EXPERIMENT_VIEWED and visitor:
            test = _text(properties.get("test_id")) or _text(properties.get("experiment_id"))
            variant = _text(properties.get("variant_id")) or _text(properties.get("variation_id"))
            if test and variant:
                self._exposed.setdefault(test, {}).setdefault(variant, set()).add(visitor)
                self._visitors_of.setdefault(visitor, set()).add((test, variant))
        elif event == CONVERSION_TRIGGERED and (visitor or user):
            conversion_id = _text(properties.get("conversion_id"))
            if conversion_id:
                visitors, users = self._conversions.setdefault(conversion_id, (set(), set()))
                if visitor:
                    visitors.add(visitor)
                if user:
                    users.add(user)

    def results(
        self, tests: Sequence[Test] = (), conversions: Sequence[Conversion] = ()
    ) -> Results:
        """The figures for every configured test and every test seen, in that order."""
        converted = self._converted()
        conversion_names = {c.id: c.name for c in conversions}
        listed = [c.id for c in conversions]
        listed += sorted(set(self._conversions) - set(listed))
        named = tuple((cid, conversion_names.get(cid)) for cid in listed)
        configured = {test.id: test for test in tests}
        test_ids = [test.id for test in tests]
        test_ids += sorted(set(self._exposed) - set(test_ids))
        return Results(
            tuple(
                self._test_result(test_id, configured.get(test_id), named, converted)
                for test_id in test_ids
            )
        )

    def _converted(self) -> dict[tuple[str, str, str], int]:
        """Converting visitors per (test, variant, conversion id)."""
        counts: dict[tuple[str, str, str], int] = {}
        for conversion_id, (visitors, users) in self._conversions.items():
            converting = set(visitors)
            for user in users:
                converting |= self._links.get(user, set())
            for visitor in converting:
                for test, variant in self._visitors_of.get(visitor, ()):
                    key = (test, variant, conversion_id)
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def _test_result(
        self,
        test_id: str,
        test: Test | None,
        conversions: tuple[tuple[str, str | None], ...],
        converted: Mapping[tuple[str, str, str], int],
    ) -> TestResult:
        exposed = self._exposed.get(test_id, {})
        names: dict[str, str | None] = {}
        weights: dict[str, float] = {}
        if test is not None:
            names = {v.id: v.name for v in test.variants}
            weights = {v.id: v.weight for v in test.variants}
            order = list(names) + sorted(set(exposed) - set(names))
        else:
            order = sorted(exposed, key=lambda variant: (variant != "control", variant))
        visitors = [len(exposed.get(variant, ())) for variant in order]
        by_conversion = {
            cid: [converted.get((test_id, variant, cid), 0) for variant in order]
            for cid, _ in conversions
        }
        p2bb = {
            cid: probability_to_be_best(list(zip(counts, visitors, strict=True)))
            for cid, counts in by_conversion.items()
        }
        variants = []
        for index, variant in enumerate(order):
            results = {
                cid: _compare(index, counts, visitors, p2bb[cid][index])
                for cid, counts in by_conversion.items()
            }
            variants.append(
                VariantResult(variant, names.get(variant), index == 0, visitors[index], results)
            )
        return TestResult(
            test_id,
            test.name if test is not None else None,
            _sample_ratio(order, visitors, weights),
            tuple(variants),
            conversions,
        )


def experiment_results(
    messages: Iterable[Mapping[str, Any]],
    *,
    tests: Sequence[Test] = (),
    conversions: Sequence[Conversion] = (),
) -> Results:
    """Results per test, variant and conversion from Segment messages.

    *tests* and *conversions* (a site's configuration) give names, the
    control (each test's first variant), the weights the split is checked
    against, and the order; tests and conversions seen only in the messages
    follow theirs. Figures per conversion: converting visitors, rate, relative
    uplift over the control, the 95 % interval of the absolute difference
    (unpooled Wald), the pooled two-proportion z-test's p-value, the
    probability to be best (Beta(1 + converted, 1 + not converted)
    posteriors), and the visitors per variant still needed to detect the
    observed effect at 80 % power. Each test also gets the sample-ratio
    mismatch p-value (chi-square against the weights; equal without a
    configuration), flagged below 0.001.
    """
    tally = _Tally()
    for message in messages:
        tally.add(message)
    return tally.results(tests, conversions)


def _compare(
    index: int, counts: Sequence[int], visitors: Sequence[int], p2bb: float
) -> ConversionResult:
    converted, n = counts[index], visitors[index]
    if index == 0:
        return ConversionResult(
            converted, rate(converted, n), None, None, None, None, None, p2bb, None
        )
    control = (counts[0], visitors[0])
    mine, theirs = rate(converted, n), rate(*control)
    interval = difference_interval(converted, n, *control)
    return ConversionResult(
        converted,
        mine,
        relative_uplift(converted, n, *control),
        None if mine is None or theirs is None else mine - theirs,
        interval[0] if interval else None,
        interval[1] if interval else None,
        two_proportion_p_value(converted, n, *control),
        p2bb,
        visitors_to_detect(converted, n, *control),
    )


def _sample_ratio(
    order: Sequence[str], visitors: Sequence[int], weights: Mapping[str, float]
) -> float:
    """The SRM p-value against *weights* (equal ones when there is no configuration)."""
    if not weights:
        return sample_ratio_p_value(visitors, [1.0] * len(visitors))
    if any(n and variant not in weights for variant, n in zip(order, visitors, strict=True)):
        return 0.0  # visitors in a variant the configuration does not have: the split is wrong
    return sample_ratio_p_value(
        [n for variant, n in zip(order, visitors, strict=True) if variant in weights],
        [weights[variant] for variant in order if variant in weights],
    )


def _text(value: object) -> str | None:
    """An id as Segment allows it: a non-empty string, or an integer."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None

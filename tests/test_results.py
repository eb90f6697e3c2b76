"""Attribution and the shape of the results: who counts for which variant, and in what order.

The formulas themselves are pinned against SciPy in tests/test_statistics.py;
here the figures are checked to be those formulas applied to the right counts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optibase_edge import Conversion, ConversionType, Test, Variant, experiment_results
from optibase_edge._results import Results, VariantResult
from optibase_edge._statistics import (
    difference_interval,
    probability_to_be_best,
    relative_uplift,
    sample_ratio_p_value,
    two_proportion_p_value,
    visitors_to_detect,
)

Message = dict[str, Any]


def viewed(visitor: str, variant: str, test: str = "hero") -> Message:
    return {
        "type": "track",
        "event": "Experiment Viewed",
        "anonymousId": visitor,
        "properties": {"test_id": test, "variant_id": variant},
    }


def converted(
    visitor: str | None, conversion: str = "signup", *, user: str | None = None
) -> Message:
    message: Message = {
        "type": "track",
        "event": "Conversion Triggered",
        "properties": {"conversion_id": conversion, "conversion_type": "CLICK"},
    }
    if visitor:
        message["anonymousId"] = visitor
    if user:
        message["userId"] = user
    return message


def identified(visitor: str, user: str) -> Message:
    return {"type": "identify", "anonymousId": visitor, "userId": user}


def variants(results: Results, test: str = "hero") -> dict[str, VariantResult]:
    [found] = [t for t in results.tests if t.test_id == test]
    return {v.variant_id: v for v in found.variants}


def counts(results: Results, conversion: str = "signup") -> dict[str, tuple[int, int]]:
    """{variant: (visitors, converted)} for *conversion* in test hero."""
    return {
        variant_id: (v.visitors, v.conversions[conversion].converted)
        for variant_id, v in variants(results).items()
    }


# --------------------------------------------------------------------------- attribution


def test_a_visitor_counts_once_per_variant_and_converts_once_per_conversion() -> None:
    messages = [
        viewed("a", "control"),
        viewed("a", "control"),  # a second Experiment Viewed (another messageId)
        viewed("b", "bold"),
        converted("a"),
        converted("a"),  # converting twice is still one converting visitor
        converted("b", "purchase"),
    ]
    results = experiment_results(messages)
    assert counts(results) == {"control": (1, 1), "bold": (1, 0)}
    assert counts(results, "purchase") == {"control": (1, 0), "bold": (1, 1)}


def test_conversions_of_visitors_never_exposed_count_for_nothing() -> None:
    messages = [viewed("a", "control"), viewed("b", "bold"), converted("stranger")]
    messages += [converted(None, user="nobody-linked")]
    assert counts(experiment_results(messages)) == {"control": (1, 0), "bold": (1, 0)}


@pytest.mark.parametrize("identify_first", [True, False])
def test_a_user_s_conversion_counts_for_the_visitors_an_identify_linked(
    identify_first: bool,
) -> None:
    link = [identified("a", "user-1"), identified("c", "user-1")]
    rest = [viewed("a", "control"), viewed("b", "bold"), viewed("c", "bold")]
    rest += [converted(None, user="user-1")]  # a backend job knows only the user
    messages = link + rest if identify_first else rest + link
    assert counts(experiment_results(messages)) == {"control": (1, 1), "bold": (2, 1)}


def test_an_identify_without_both_ids_links_nothing() -> None:
    messages = [viewed("a", "control"), {"type": "identify", "userId": "user-1"}]
    messages += [{"type": "identify", "anonymousId": "a"}, converted(None, user="user-1")]
    assert counts(experiment_results(messages)) == {"control": (1, 0)}


def test_a_conversion_counts_for_every_test_the_visitor_saw() -> None:
    messages = [viewed("a", "control"), viewed("a", "green", test="button"), converted("a")]
    results = experiment_results(messages)
    assert variants(results)["control"].conversions["signup"].converted == 1
    assert variants(results, "button")["green"].conversions["signup"].converted == 1


def test_segment_ab_spec_aliases_integer_ids_and_bare_track_bodies_are_read() -> None:
    spec = {
        "event": "Experiment Viewed",  # a /v1/track body: no "type"
        "anonymousId": 7,
        "properties": {"experiment_id": "hero", "variation_id": "bold"},
    }
    results = experiment_results([spec, converted("7")])
    assert counts(results) == {"bold": (1, 1)}


@pytest.mark.parametrize(
    "noise",
    [
        {"type": "page", "anonymousId": "a", "properties": {"test_id": "hero"}},
        {"type": "track", "event": "Experiment Viewed", "anonymousId": "a", "properties": None},
        {"type": "track", "event": "Experiment Viewed", "properties": {"test_id": "hero"}},
        {"type": "track", "event": "Experiment Viewed", "anonymousId": "", "properties": {}},
        {"type": "track", "event": "Experiment Viewed", "anonymousId": ["a"], "properties": {}},
        {"type": "track", "event": "Conversion Triggered", "properties": {"conversion_id": "x"}},
        {"type": ["track"], "event": "Experiment Viewed", "anonymousId": "a"},
        {"type": "track", "event": "Conversion Triggered", "anonymousId": "a", "properties": []},
        {"type": "track", "event": "Order Completed", "anonymousId": "a", "properties": {}},
        {"type": "identify", "anonymousId": True, "userId": {"id": 1}},
    ],
)
def test_messages_that_are_not_usable_are_ignored(noise: Message) -> None:
    results = experiment_results([viewed("a", "control"), noise, converted("a")])
    assert counts(results) == {"control": (1, 1)}
    assert [t.test_id for t in results.tests] == ["hero"]


# --------------------------------------------------------------------------- a random world

ids = st.sampled_from
exposure = st.tuples(ids(["v0", "v1", "v2"]), ids(["hero", "button"]))
world = st.fixed_dictionaries(
    {
        "exposures": st.dictionaries(
            ids([f"a{i}" for i in range(12)]), st.lists(exposure, min_size=1, max_size=3)
        ),
        "links": st.lists(st.tuples(ids([f"a{i}" for i in range(14)]), ids(["u0", "u1", "u2"]))),
        "conversions": st.lists(
            st.tuples(
                ids(["signup", "buy"]),
                st.none() | ids([f"a{i}" for i in range(14)]),
                st.none() | ids(["u0", "u1", "u2", "u3"]),
            ).filter(lambda c: c[1] is not None or c[2] is not None),
            max_size=25,
        ),
        "seed": st.integers(0, 2**32 - 1),
    }
)


@settings(max_examples=150, deadline=None)
@given(world)
def test_counts_follow_the_attribution_rules_in_any_message_order(spec: Mapping[str, Any]) -> None:
    exposures: dict[str, list[tuple[str, str]]] = spec["exposures"]
    links: list[tuple[str, str]] = spec["links"]
    conversions: list[tuple[str, str | None, str | None]] = spec["conversions"]
    messages = [viewed(a, variant, test) for a, seen in exposures.items() for variant, test in seen]
    messages += [identified(a, user) for a, user in links]
    messages += [converted(a, cid, user=user) for cid, a, user in conversions]
    random.Random(spec["seed"]).shuffle(messages)

    results = experiment_results(messages)

    def converts(visitor: str, conversion_id: str) -> bool:
        return any(
            cid == conversion_id and (a == visitor or (user, visitor) in {(u, v) for v, u in links})
            for cid, a, user in conversions
        )

    conversion_ids = sorted({cid for cid, _, _ in conversions})
    for test in results.tests:
        assert [cid for cid, _ in test.conversions] == conversion_ids
        for variant in test.variants:
            pair = (variant.variant_id, test.test_id)
            exposed = {a for a, seen in exposures.items() if pair in seen}
            assert variant.visitors == len(exposed)
            for cid in conversion_ids:
                expected = sum(converts(a, cid) for a in exposed)
                assert variant.conversions[cid].converted == expected
    assert {t.test_id for t in results.tests} == {test for s in exposures.values() for _, test in s}


# --------------------------------------------------------------------------- the figures


def lopsided(control: tuple[int, int], bold: tuple[int, int]) -> list[Message]:
    """Visitors and signups per variant: (visitors, converted)."""
    messages = []
    for variant, (n, c) in (("control", control), ("bold", bold)):
        for i in range(n):
            messages.append(viewed(f"{variant}-{i}", variant))
            if i < c:
                messages.append(converted(f"{variant}-{i}"))
    return messages


def test_each_variant_gets_the_statistics_of_its_counts_against_the_control() -> None:
    results = experiment_results(lopsided((400, 40), (380, 57)))
    control, bold = variants(results)["control"], variants(results)["bold"]
    assert control.control and not bold.control
    base, other = control.conversions["signup"], bold.conversions["signup"]
    assert (base.rate, other.rate) == (40 / 400, 57 / 380)
    assert (base.uplift, base.ci_low, base.ci_high, base.p_value, base.more_visitors) == (None,) * 5
    assert other.uplift == relative_uplift(57, 380, 40, 400)
    assert (other.ci_low, other.ci_high) == difference_interval(57, 380, 40, 400)
    assert other.p_value == two_proportion_p_value(57, 380, 40, 400)
    assert other.more_visitors == visitors_to_detect(57, 380, 40, 400)
    assert (base.p2bb, other.p2bb) == probability_to_be_best([(40, 400), (57, 380)])
    [test] = results.tests
    assert test.srm_p_value == sample_ratio_p_value([400, 380], [1, 1])


def test_figures_that_are_undefined_are_none() -> None:
    results = experiment_results(lopsided((50, 0), (50, 5)))
    bold = variants(results)["bold"].conversions["signup"]
    assert bold.uplift is None  # a control rate of 0
    assert bold.p_value is not None and bold.ci_low is not None
    configured = Test(id="hero", variants=[Variant("control"), Variant("bold"), Variant("late")])
    results = experiment_results(lopsided((50, 0), (50, 5)), tests=[configured])
    late = variants(results)["late"].conversions["signup"]
    assert variants(results)["late"].visitors == 0
    assert (late.rate, late.uplift, late.ci_low, late.p_value, late.more_visitors) == (None,) * 5


def test_the_split_is_checked_against_the_configured_weights() -> None:
    messages = lopsided((300, 0), (100, 0))
    assert experiment_results(messages).tests[0].srm_warning  # equal weights: 300 vs 100
    weighted = Test(id="hero", variants=[Variant("control", weight=3), Variant("bold")])
    [test] = experiment_results(messages, tests=[weighted]).tests
    assert not test.srm_warning
    assert test.srm_p_value == sample_ratio_p_value([300, 100], [3, 1])


def test_visitors_in_a_variant_the_configuration_lacks_are_a_mismatch() -> None:
    messages = [*lopsided((100, 0), (100, 0)), viewed("x", "retired")]
    configured = Test(id="hero", variants=[Variant("control"), Variant("bold")])
    [test] = experiment_results(messages, tests=[configured]).tests
    assert [v.variant_id for v in test.variants] == ["control", "bold", "retired"]
    assert test.srm_p_value == 0.0 and test.srm_warning


# --------------------------------------------------------------------------- order and names


def test_the_configuration_orders_and_names_tests_variants_and_conversions() -> None:
    messages = [viewed("a", "bold"), viewed("b", "control"), viewed("c", "zeta", test="other")]
    messages += [converted("a", "zz-unconfigured"), converted("b", "signup")]
    tests = [
        Test(
            id="hero",
            name="Home page headline",
            variants=[Variant("control", name="Calm"), Variant("bold", name="Bold")],
        ),
        Test(id="idle", variants=[Variant("a"), Variant("b")]),
    ]
    conversions = [
        Conversion(id="purchase", type=ConversionType.PROGRAMMATIC, name="Bought"),
        Conversion(id="signup", type=ConversionType.PROGRAMMATIC),
    ]
    results = experiment_results(messages, tests=tests, conversions=conversions)
    assert [(t.test_id, t.name) for t in results.tests] == [
        ("hero", "Home page headline"),
        ("idle", None),  # configured, no data yet: listed with zeros
        ("other", None),
    ]
    hero, idle, _ = results.tests
    assert [(v.variant_id, v.name, v.control) for v in hero.variants] == [
        ("control", "Calm", True),
        ("bold", "Bold", False),
    ]
    assert hero.conversions == (
        ("purchase", "Bought"),
        ("signup", None),
        ("zz-unconfigured", None),
    )
    assert [v.visitors for v in idle.variants] == [0, 0]
    assert idle.srm_p_value == 1.0


@pytest.mark.parametrize(
    ("seen", "order"),
    [
        (["b", "control", "a"], ["control", "a", "b"]),
        (["zeta", "beta", "alpha"], ["alpha", "beta", "zeta"]),
    ],
)
def test_without_a_configuration_the_control_is_control_else_the_first_id(
    seen: list[str], order: list[str]
) -> None:
    results = experiment_results([viewed(f"v-{v}", v) for v in seen])
    assert [(v.variant_id, v.control) for v in results.tests[0].variants] == [
        (variant, variant == order[0]) for variant in order
    ]


# --------------------------------------------------------------------------- JSON


def test_the_json_document_has_exactly_the_report_schema() -> None:
    document = experiment_results(lopsided((10, 0), (10, 3))).to_json()
    assert list(document) == ["tests"]
    [test] = document["tests"]
    assert list(test) == ["test_id", "srm_p_value", "srm_warning", "variants"]
    assert isinstance(test["srm_p_value"], float) and test["srm_warning"] is False
    control, bold = test["variants"]
    assert list(control) == ["variant_id", "control", "visitors", "conversions"]
    assert (control["variant_id"], control["control"], control["visitors"]) == ("control", True, 10)
    assert list(control["conversions"]) == ["signup"]
    fields = ["visitors", "rate", "uplift", "ci_low", "ci_high", "p_value", "p2bb"]
    assert list(control["conversions"]["signup"]) == fields
    assert control["conversions"]["signup"] == {
        "visitors": 0,
        "rate": 0.0,
        "uplift": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
        "p2bb": control["conversions"]["signup"]["p2bb"],
    }
    signup = bold["conversions"]["signup"]
    assert signup["visitors"] == 3 and signup["rate"] == 0.3
    assert signup["uplift"] is None  # the control's rate is 0
    assert all(isinstance(signup[k], float) for k in ("ci_low", "ci_high", "p_value", "p2bb"))

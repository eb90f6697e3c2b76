"""Golden vectors: assignments frozen as literals, so that none can move between releases.

``TESTS`` and ``CASES`` were computed once, with the implementation at commit
``ec0ff2d``, and written down; they are never regenerated. A failure of
``test_golden_cases`` means that some visitor would see a different variant
after an upgrade: that is a breaking change, never a test to update.

The second half is a re-implementation written from the README's "How a
visitor is assigned" alone (``hashlib`` only, nothing from
``optibase_edge._assignment``): it must agree with the table, with the
library on generated inputs, and with what the middleware assigns to real
visitors. ``RAW`` spells out every intermediate value of a few cases, for
checking a port to another language step by step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import (
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._assignment import buckets, choose, compile_test
from tests.support.user_agents import AS_A_BROWSER

README = Path(__file__).resolve().parent.parent / "README.md"

# -- the frozen table ---------------------------------------------------------------------

TESTS = {
    test.id: test
    for test in (
        Test(id="hero", variants=[Variant("control"), Variant("bold")]),
        Test(
            id="pricing",
            variants=[
                Variant("control", weight=2),
                Variant("annual-first"),
                Variant("monthly-first"),
            ],
            traffic=0.5,
        ),
        Test(
            id="checkout",
            seed="checkout-round-2",
            variants=[
                Variant("a", weight=0.1),
                Variant("b", weight=0.2),
                Variant("c", weight=0.3),
                Variant("d", weight=0.4),
            ],
        ),
        Test(
            id="überschrift-ヘッダー",
            variants=[Variant("kurz", weight=0.7), Variant("lang", weight=0.3)],
            traffic=0.1,
        ),
        Test(
            id="cta",
            variants=[
                Variant("blue", weight=1.5),
                Variant("green", weight=0.25),
                Variant("orange", weight=3),
            ],
            traffic=0.5,
        ),
    )
}

# (visitor id, test id, variant or None when outside the test's traffic)
CASES: list[tuple[str, str, str | None]] = [
    ("4462ebfc-5f91-4ef0-9cfb-ac6e7687a66e", "hero", "control"),
    ("76b67451-80b6-4386-969c-803601a5ba50", "hero", "control"),
    ("ad38835e-ddd6-4f55-afa7-3207237751aa", "hero", "bold"),
    ("558298e2-14b0-44d7-9acd-8acde5f6db1d", "hero", "bold"),
    ("b339a476-9ddc-46f8-afb6-fbfe8de4ab47", "hero", "bold"),
    ("2b5ebaa0-6107-4dc3-ba6a-ce6c0a78250f", "hero", "bold"),
    ("f3868254-73b7-4490-b23b-2cc4b4174a67", "hero", "bold"),
    ("2b1e1885-283b-43a6-ac2e-a417b99de255", "pricing", None),
    ("f6c986f2-1caf-407a-99c9-8c23e80a86cf", "pricing", None),
    ("da298ade-e532-4b4e-b29a-86139425b3e2", "pricing", None),
    ("21e6a46f-1c67-4ea9-8d24-3a163cee5e2c", "pricing", "control"),
    ("cb01c357-b9c7-4435-b96b-cb8fac9abb0c", "pricing", "monthly-first"),
    ("c3ad4d99-1f09-46cb-80fd-ed6598cae043", "pricing", "monthly-first"),
    ("bc79ce03-6cba-4cf1-bc9a-8df50602fe0c", "pricing", "annual-first"),
    ("e4794195-021c-46ff-9489-14ef33fb4b4f", "checkout", "a"),
    ("eaeb999b-8a2e-447e-a218-4e8215607df9", "checkout", "c"),
    ("92aeb20c-15b7-495f-8034-a6a704789365", "checkout", "d"),
    ("9345a915-feb0-4634-bca4-537f44b00011", "checkout", "d"),
    ("de608174-1f0f-49e9-88c3-d505ff7a9631", "checkout", "d"),
    ("bec2223b-2638-417f-9a1b-ddc69b3bc5ef", "checkout", "b"),
    ("e7f8ec98-f36f-4ce1-a701-9017b4999178", "checkout", "b"),
    ("8141df31-9c72-492c-a967-c63d3c9e0381", "überschrift-ヘッダー", None),
    ("1bd8adbe-389d-447e-b7fb-aadb31319405", "überschrift-ヘッダー", None),
    ("131b2eef-1ebe-49e9-8d7f-c2ec1c50b2a1", "überschrift-ヘッダー", None),
    ("15220a04-f9e7-4e47-a533-a8f2f0295827", "überschrift-ヘッダー", None),
    ("06011581-bdb5-4c01-9a86-d9325f576f4c", "überschrift-ヘッダー", None),
    ("90b301ff-971b-4776-85a5-a77aac937076", "überschrift-ヘッダー", "kurz"),
    ("2120130d-c7ad-41da-b394-6a023b378e73", "überschrift-ヘッダー", "lang"),
    ("335fbf7e-85a2-4d77-a065-dff277aeb030", "cta", "orange"),
    ("c36b472c-41a1-4d01-8166-957f3c7488b6", "cta", None),
    ("078b2ab7-182b-47b1-9bf0-ed0cf7b098a9", "cta", None),
    ("6aa4d4ee-3f47-44ed-b077-4acb51535f1a", "cta", None),
    ("903a577d-7de0-4252-925e-20d99aaaea47", "cta", None),
    ("50aa0831-da05-4e7f-b9bf-79dd405103f4", "cta", "blue"),
    ("4d7fdc90-eb83-497a-ba37-fe7ae0673fcb", "cta", "green"),
]


class Raw(NamedTuple):
    """Every step of one assignment: the key, the digest, its two halves, the two numbers."""

    seed: str
    visitor_id: str
    key: str  # BLAKE2b-256 of the seed, hex
    digest: str  # the keyed, personalised BLAKE2b-128 of the visitor ID, hex
    traffic_int: int  # digest[:8], big-endian
    variant_int: int  # digest[8:], big-endian
    traffic_number: float  # traffic_int / 2**64
    variant_number: float  # variant_int / 2**64


def raw_id(raw: Raw) -> str:
    return ascii(f"{raw.seed}/{raw.visitor_id[:8]}")[1:-1]


RAW = [
    Raw(
        seed="hero",
        visitor_id="4462ebfc-5f91-4ef0-9cfb-ac6e7687a66e",
        key="592635c885cb9d88ed6223543618bf18adf9d018ad18ea1a9a8bed54edfae611",
        digest="3ba283ea41a64c8110650d61cf803541",
        traffic_int=4297142036611878017,
        variant_int=1181365190998897985,
        traffic_number=0.23294853657866915,
        variant_number=0.0640419353289879,
    ),
    # the README's worked example
    Raw(
        seed="pricing",
        visitor_id="bc79ce03-6cba-4cf1-bc9a-8df50602fe0c",
        key="a08e64fe146359cdcb529fa8d82eb314a1c035dab6d2b7ae6466647433216d90",
        digest="4ed5f7fd370a0830b00f1606498932f4",
        traffic_int=5680719171919939632,
        variant_int=12686382891585319668,
        traffic_number=0.3079524033737827,
        variant_number=0.6877301946019869,
    ),
    # an explicit seed: the key is the seed's hash, not the test id's
    Raw(
        seed="checkout-round-2",
        visitor_id="bec2223b-2638-417f-9a1b-ddc69b3bc5ef",
        key="267c75a9aae6df987d5950dc4371593c24ca9be9375a326ed195ec3900691e4d",
        digest="d8eadc321973b0af36313693750d8682",
        traffic_int=15630547564476215471,
        variant_int=3904962358858843778,
        traffic_number=0.8473336813271561,
        variant_number=0.2116884336474439,
    ),
    # UTF-8: "ü" is c3 bc, "ヘ" is e3 83 98
    Raw(
        seed="überschrift-ヘッダー",
        visitor_id="90b301ff-971b-4776-85a5-a77aac937076",
        key="79045b33c825ad729c6113adebf9ba6ca599213b0c91669818460c90d0b46da9",
        digest="197d31860fc3b24501c2e78a07f8cbad",
        traffic_int=1836678674896892485,
        variant_int=126918319545043885,
        traffic_number=0.09956655047405041,
        variant_number=0.006880255888947302,
    ),
    # a lone surrogate is encoded as its three bytes (ed a0 bd), as "surrogatepass" does
    Raw(
        seed="lone-\ud83d",
        visitor_id="4462ebfc-5f91-4ef0-9cfb-ac6e7687a66e",
        key="22d501bf31c5e29bc2e2f73f708917cd3531e99fc4471c4531bc47e9b4985327",
        digest="7dfd501bcc77c891a2d2200b7595142d",
        traffic_int=9078500504173529233,
        variant_int=11732475212842996781,
        traffic_number=0.4921464984767844,
        variant_number=0.6360187557198355,
    ),
    # ... and in a visitor ID (a real one is a UUID, but the hash takes any string)
    Raw(
        seed="hero",
        visitor_id="\udcff-4462ebfc",
        key="592635c885cb9d88ed6223543618bf18adf9d018ad18ea1a9a8bed54edfae611",
        digest="6275b13e5ab3406b3c269039c3be361e",
        traffic_int=7094771669359870059,
        variant_int=4334310269162239518,
        traffic_number=0.384608342860429,
        variant_number=0.23496343050259658,
    ),
    # an empty seed is a seed: the key is BLAKE2b-256 of no bytes, not of the test id
    Raw(
        seed="",
        visitor_id="4462ebfc-5f91-4ef0-9cfb-ac6e7687a66e",
        key="0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8",
        digest="45e61e8dc4c776f297be134e6296fd12",
        traffic_int=5036746827501106930,
        variant_int=10934198172684582162,
        traffic_number=0.27304259263180863,
        variant_number=0.5927440706605829,
    ),
]


def test_the_table_covers_what_it_should() -> None:
    assert 30 <= len(CASES) <= 40
    for test_id, test in TESTS.items():
        seen = {variant for _, t, variant in CASES if t == test_id}
        outside = {None} if test.traffic < 1 else set()
        assert seen == {v.id for v in test.variants} | outside, test_id
    assert len({visitor for visitor, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("visitor_id", "test_id", "expected"), CASES)
def test_golden_cases(visitor_id: str, test_id: str, expected: str | None) -> None:
    assert choose(compile_test(TESTS[test_id]), visitor_id) == expected


@pytest.mark.parametrize("raw", RAW, ids=raw_id)
def test_golden_buckets(raw: Raw) -> None:
    test = Test(id="raw", seed=raw.seed, variants=[Variant("a"), Variant("b")])
    assert buckets(compile_test(test), raw.visitor_id) == (raw.traffic_number, raw.variant_number)


# -- the README's description, re-implemented ----------------------------------------------
# Nothing below may use optibase_edge._assignment: it is the README, in Python.


def reference_key(seed: str) -> bytes:
    return hashlib.blake2b(seed.encode("utf-8", "surrogatepass"), digest_size=32).digest()


def reference_digest(seed: str, visitor_id: str) -> bytes:
    return hashlib.blake2b(
        visitor_id.encode("utf-8", "surrogatepass"),
        digest_size=16,
        key=reference_key(seed),
        person=b"optibase-assign",
    ).digest()


def reference_numbers(digest: bytes) -> tuple[float, float]:
    """(traffic number, variant number): each half, big-endian, as a double, over 2**64."""
    traffic = float(int.from_bytes(digest[:8], "big")) / 2.0**64
    variant = float(int.from_bytes(digest[8:], "big")) / 2.0**64
    return traffic, variant


def reference_pick(
    weights: Sequence[float], traffic: float, numbers: tuple[float, float]
) -> int | None:
    """The index of the variant, or None outside the traffic share."""
    traffic_number, variant_number = numbers
    if not traffic_number < traffic:
        return None
    running: list[float] = []
    total = 0.0
    for weight in weights:  # added left to right, in configuration order
        total += weight
        running.append(total)
    for index, cumulative in enumerate(running):
        if cumulative / total > variant_number:
            return index
    return len(weights) - 1  # rounding left no threshold above the number


def reference_choose(test: Test, visitor_id: str) -> str | None:
    seed = test.id if test.seed is None else test.seed
    numbers = reference_numbers(reference_digest(seed, visitor_id))
    index = reference_pick([v.weight for v in test.variants], test.traffic, numbers)
    return None if index is None else test.variants[index].id


@pytest.mark.parametrize(("visitor_id", "test_id", "expected"), CASES)
def test_reference_agrees_with_the_table(
    visitor_id: str, test_id: str, expected: str | None
) -> None:
    assert reference_choose(TESTS[test_id], visitor_id) == expected


@pytest.mark.parametrize("raw", RAW, ids=raw_id)
def test_reference_reproduces_every_step(raw: Raw) -> None:
    assert reference_key(raw.seed).hex() == raw.key
    digest = reference_digest(raw.seed, raw.visitor_id)
    assert digest.hex() == raw.digest
    assert int.from_bytes(digest[:8], "big") == raw.traffic_int
    assert int.from_bytes(digest[8:], "big") == raw.variant_int
    assert reference_numbers(digest) == (raw.traffic_number, raw.variant_number)


def test_the_readme_worked_example_is_a_golden_vector() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## How a visitor is assigned", 1)[1].split("\n## ", 1)[0]
    example = RAW[1]
    for value in (
        example.visitor_id,
        example.key,
        " ".join(re.findall("." * 16, example.digest)),
        f"{example.traffic_int:,}",
        f"{example.variant_int:,}",
        repr(example.traffic_number),
        repr(example.variant_number),
    ):
        assert value in section, value
    assert ("bc79ce03-6cba-4cf1-bc9a-8df50602fe0c", "pricing", "annual-first") in CASES


# -- the edges: numbers exactly on a boundary, which no real visitor ID will hit ----------


class FixedDigest:
    """Stands in for the plan's keyed hasher: every visitor hashes to *digest*."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def copy(self) -> FixedDigest:
        return self

    def update(self, data: bytes) -> None:
        pass

    def digest(self) -> bytes:
        return self._digest


HALF = 1 << 63
TOP = (1 << 64) - 1
# The integers from 2**64 - 1024 up round to 2**64 as doubles: their number is 1.0.
LAST_BELOW_ONE = (1 << 64) - 1025

# (traffic half, variant half, test id, traffic, expected); "pricing" is 2:1:1, thresholds
# 0.5, 0.75, 1.0.
EDGES: list[tuple[int, int, str, float, str | None]] = [
    (0, 0, "pricing", 0.5, "control"),
    (0, 0, "pricing", 0.0, None),  # traffic 0 takes no one, not even 0.0
    (HALF - 1024, 0, "pricing", 0.5, "control"),  # the largest number below 0.5 is in
    (HALF - 1, 0, "pricing", 0.5, None),  # rounds to 0.5: not below 0.5, outside
    (HALF, 0, "pricing", 0.5, None),  # exactly the traffic share: outside
    (LAST_BELOW_ONE, 0, "pricing", 1.0, "control"),
    (TOP, 0, "pricing", 1.0, None),  # 1.0: outside even at traffic 1 (1 in 1.8e16)
    (0, HALF - 1024, "pricing", 1.0, "control"),
    (0, HALF, "pricing", 1.0, "annual-first"),  # on a threshold: the next variant
    (0, HALF + (HALF >> 1), "pricing", 1.0, "monthly-first"),  # 0.75
    (0, LAST_BELOW_ONE, "pricing", 1.0, "monthly-first"),
    (0, TOP, "pricing", 1.0, "monthly-first"),  # 1.0: no threshold above it, the last
    (0, HALF, "hero", 1.0, "bold"),
]


@pytest.mark.parametrize(("traffic_int", "variant_int", "test_id", "traffic", "expected"), EDGES)
def test_boundaries(
    traffic_int: int, variant_int: int, test_id: str, traffic: float, expected: str | None
) -> None:
    test = dataclasses.replace(TESTS[test_id], traffic=traffic)
    digest = traffic_int.to_bytes(8, "big") + variant_int.to_bytes(8, "big")
    plan = dataclasses.replace(compile_test(test), _hasher=FixedDigest(digest))
    assert choose(plan, "any visitor") == expected
    index = reference_pick([v.weight for v in test.variants], traffic, reference_numbers(digest))
    assert (None if index is None else test.variants[index].id) == expected


# -- the library and the re-implementation agree on anything ------------------------------

any_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    # lone surrogates are rare among all code points: ask for them
    st.text(st.sampled_from(["a", "é", "ヘ", "\U0001f600", "\ud83d", "\udcff"]), max_size=8),
)
weights = st.one_of(
    st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=10_000),
)


@settings(max_examples=300, deadline=None)
@given(
    visitor_id=st.one_of(st.uuids(version=4).map(str), any_text),
    test_id=any_text.filter(lambda s: s.strip()),
    seed=st.one_of(st.none(), any_text),
    variant_weights=st.lists(weights, min_size=2, max_size=6),
    traffic=st.one_of(st.floats(min_value=0, max_value=1), st.sampled_from([0, 1, 0.5, 0.1])),
)
def test_reference_agrees_with_the_library(
    visitor_id: str,
    test_id: str,
    seed: str | None,
    variant_weights: list[float],
    traffic: float,
) -> None:
    test = Test(
        id=test_id,
        seed=seed,
        variants=[Variant(f"v{i}", weight=w) for i, w in enumerate(variant_weights)],
        traffic=traffic,
    )
    plan = compile_test(test)
    key = test.id if seed is None else seed
    assert buckets(plan, visitor_id) == reference_numbers(reference_digest(key, visitor_id))
    assert choose(plan, visitor_id) == reference_choose(test, visitor_id)


# -- end to end: what the middleware assigns to new visitors ------------------------------

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


async def every_variant(request: Request) -> Response:
    visitor = get_visitor(request)
    return JSONResponse({"id": visitor.id, "variants": {t: visitor.variant(t) for t in TESTS}})


@pytest.fixture
def client() -> Iterator[TestClient]:
    ob = Optibase(
        tests=list(TESTS.values()),
        secret_keys=["golden-vectors-secret-0123456789ab"],
        transport=MockTransport(lambda batch: Outcome(200)),
    )
    app = Starlette(routes=[Route("/", every_variant)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    with TestClient(app) as test_client:
        yield test_client


def test_the_middleware_assigns_what_the_readme_says(client: TestClient) -> None:
    seen: set[str] = set()
    for _ in range(25):
        client.cookies.clear()  # a new visitor each time
        first: dict[str, Any] = client.get("/", headers=AS_A_BROWSER).json()
        visitor_id = first["id"]
        assert UUID4.fullmatch(visitor_id), visitor_id
        expected = {t: reference_choose(test, visitor_id) for t, test in TESTS.items()}
        assert first["variants"] == expected
        assert expected["hero"] is not None  # a visitor, not taken for a bot
        # and the visitor keeps it: the cookie brings back the same ID and variants
        again = client.get("/", headers=AS_A_BROWSER).json()
        assert again == first
        seen.add(visitor_id)
    assert len(seen) == 25

"""The demo's A/B test and conversions: what Paperplane measures, and the copy it tests.

Test ``hero`` shows one of three headlines on ``/``; tests ``landing_hero`` and
``landing_pricing`` are the variant blocks of the landing page the demo's edge
serves (:mod:`demo_site.landing`).  Conversions: ``signup``
(CLICK on ``#signup``, once per visitor), ``pricing`` (PAGE_VIEW of
``/pricing``) and ``purchase`` (PROGRAMMATIC, from the ``/buy`` view).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from demo_site.csp import csp_nonce
from demo_site.webflow_page import BLOCK_TESTS
from optibase_edge import Conversion, ConversionType, Optibase, Test, Variant

TEST_ID: Final = "hero"
HEADLINES: Final[Mapping[str, str]] = {
    "control": "Invoicing that gets out of your way",
    "bold": "Get paid twice as fast",
    "social": "Trusted by 12,000 freelancers",
}
"""The variants of test ``hero`` (their ids are the keys) and their headline."""
SUBLINES: Final[Mapping[str, str]] = {
    "control": "Send a polished invoice in under a minute, then get back to real work.",
    "bold": "Smart reminders and one-click card payments cut the wait from weeks to days.",
    "social": "Designers, developers and writers send their invoices with Paperplane.",
}
VARIANT_NAMES: Final[Mapping[str, str]] = {
    "control": "Calm (control)",
    "bold": "Bold promise",
    "social": "Social proof",
}

LANDING_NAMES: Final[Mapping[str, str]] = {
    "landing_hero": "Landing page headline (edge)",
    "landing_pricing": "Landing page prices (edge)",
}
LANDING_TESTS: Final = tuple(
    Test(id=test_id, name=LANDING_NAMES[test_id], variants=[Variant(v) for v in variants])
    for test_id, variants in BLOCK_TESTS.items()
)
"""The landing page's tests, which the demo's edge runs: assigned where their blocks are served."""
TESTS: Final = (
    Test(
        id=TEST_ID,
        name="Home page headline",
        variants=[Variant(v, name=VARIANT_NAMES[v]) for v in HEADLINES],
        pages=["/"],
    ),
    *LANDING_TESTS,
)
"""The site's test, and the landing page's; the first variant is the control."""
CONVERSIONS: Final = (
    Conversion(
        id="signup",
        type=ConversionType.CLICK,
        selector="#signup",
        one_per_visitor=True,
        name="Clicked “Start free trial”",
    ),
    Conversion(id="pricing", type=ConversionType.PAGE_VIEW, url="/pricing", name="Saw pricing"),
    Conversion(id="purchase", type=ConversionType.PROGRAMMATIC, name="Bought a plan"),
)
"""What the site counts as converting."""


def build_optibase(
    *,
    segment_endpoint: str,
    write_key: str,
    secret_keys: Sequence[str],
    flush_interval: float = 0.2,
    tests: Sequence[Test] = TESTS,
    **settings: Any,
) -> Optibase:
    """The demo's experiments and conversions, reporting to *segment_endpoint*."""
    return Optibase(
        tests=tests,
        conversions=CONVERSIONS,
        secret_keys=list(secret_keys),
        segment_write_key=write_key,
        segment_endpoint=segment_endpoint,
        csp_nonce=csp_nonce,
        flush_interval=flush_interval,
        **settings,
    )

"""The sink's dashboard in a real headless Chromium: every figure, live updates, no CSP noise.

A sink configured like a site (names, controls, weights) runs under real
uvicorn; events with known counts go to its ``/v1/batch`` as a site's delivery
would send them. Every figure on the page is read from its ``data-``
attributes and compared with :func:`optibase_edge.experiment_results` of the
same messages, never with numbers written here: the statistics are not this
page's business. Then more events arrive while the page is open, and the
results must follow without a reload. Screenshots go to the artefacts
directory (tests/support/artefacts.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx2
import pytest

from demo_site.sink import create_sink_app
from optibase_edge import Conversion, ConversionType, Test, Variant, experiment_results
from optibase_edge._results import Results
from tests.support.artefacts import artefact_path
from tests.support.dashboard import (
    READ_RESULTS_JS,
    TestView,
    assert_shows,
    expected_verdict,
    view,
    views_from_json,
)
from tests.support.server import serve

WRITE_KEY: Final = "dashboard-key"
AUTH: Final = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
BATCH: Final = 500  # messages per request, well under the sink's 500 KB and 2,500 messages
UPDATE_TIMEOUT_MS: Final = 10_000  # the page polls every second

TESTS: Final = (
    Test(
        id="hero",
        name="Home page headline",
        variants=[
            Variant("control", name="Calm"),
            Variant("bold", name="Bold promise"),
            Variant("social", name="Social proof"),
        ],
    ),
    Test(id="layout", name="Pricing layout", variants=[Variant("cards"), Variant("table")]),
)
CONVERSIONS: Final = (
    Conversion(id="signup", type=ConversionType.CLICK, selector="#signup", name="Started a trial"),
    Conversion(id="pricing", type=ConversionType.PAGE_VIEW, url="/pricing", name="Saw pricing"),
    Conversion(id="purchase", type=ConversionType.PROGRAMMATIC, name="Bought a plan"),
)


# --------------------------------------------------------------------------- events


def exposure(visitor: str, test: str, variant: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Experiment Viewed",
        "anonymousId": visitor,
        "properties": {"test_id": test, "variant_id": variant},
    }


def conversion(conversion_id: str, **ids: str) -> dict[str, Any]:
    """A Conversion Triggered carrying *ids* (``anonymousId=`` and/or ``userId=``)."""
    properties = {"conversion_id": conversion_id, "conversion_type": "CLICK"}
    return {"type": "track", "event": "Conversion Triggered", **ids, "properties": properties}


def cohort(
    test: str, variant: str, visitors: int, converted: Mapping[str, int], *, start: int = 0
) -> list[dict[str, Any]]:
    """*visitors* exposed to *variant*; the first ``converted[id]`` of them convert on *id*.

    Visitors are numbered from *start*, so a later cohort brings new ones.
    """
    messages = []
    for n in range(visitors):
        visitor = f"{test}-{variant}-{start + n}"
        messages.append(exposure(visitor, test, variant))
        messages += [conversion(c, anonymousId=visitor) for c, k in converted.items() if n < k]
    return messages


def with_message_ids(messages: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [{**message, "messageId": f"{prefix}-{i}"} for i, message in enumerate(messages)]


FIRST: Final = with_message_ids(
    [
        *cohort("hero", "control", 400, {"signup": 40, "pricing": 80}),
        *cohort("hero", "bold", 410, {"signup": 68, "pricing": 50}),
        *cohort("hero", "social", 390, {"signup": 41, "pricing": 78}),
        # A user's purchase counts for the visitor an Identify links it to, even a later one.
        conversion("purchase", userId="user-7"),
        {"type": "identify", "anonymousId": "hero-bold-7", "userId": "user-7"},
        # A visitor never exposed to a test: its conversion counts for no variant.
        conversion("signup", anonymousId="stranger"),
        # Not split as weighted (1:1): the sample-ratio check must say so.
        *cohort("layout", "cards", 300, {"signup": 30}),
        *cohort("layout", "table", 200, {"signup": 20}),
    ],
    "first",
)
MORE: Final = with_message_ids(cohort("hero", "social", 25, {"signup": 10}, start=390), "more")


def post(sink_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), BATCH):
        response = httpx2.post(
            f"{sink_url}/v1/batch",
            json={"batch": messages[start : start + BATCH]},
            headers=AUTH,
            timeout=10,
        )
        assert response.status_code == 200, response.text


def expected(messages: list[dict[str, Any]]) -> Results:
    return experiment_results(messages, tests=TESTS, conversions=CONVERSIONS)


# --------------------------------------------------------------------------- the page


@pytest.fixture
def sink_url(tmp_path: Path) -> Iterator[str]:
    app = create_sink_app(
        str(tmp_path / "sink.sqlite3"), write_key=WRITE_KEY, tests=TESTS, conversions=CONVERSIONS
    )
    with serve(app) as url:
        yield url


def shown(page: Any) -> list[TestView]:
    return views_from_json(page.evaluate(READ_RESULTS_JS))


def converted(views: list[TestView], test: str, conversion_id: str) -> list[int]:
    return [int(r.cells["converted"].value) for r in view(views, test).table(conversion_id).rows]


def assert_clean(page: Any, errors: list[str]) -> None:
    assert page.evaluate("window.__violations") == []
    assert errors == []


def test_every_figure_matches_experiment_results_and_follows_new_events(
    page: Any, sink_url: str, errors: list[str]
) -> None:
    post(sink_url, FIRST)
    # The events exercise what the page must show: every verdict, a likely best, both SRM states.
    results = expected(FIRST)
    hero, layout = results.tests
    control = hero.variants[0].conversions
    verdicts = {
        expected_verdict(v, v.conversions[cid], control[cid])[0]
        for v in hero.variants
        for cid in ("signup", "pricing")
    }
    assert verdicts == {"baseline", "better", "worse", "needs-visitors", "not-detectable"}
    assert max(v.conversions["signup"].p2bb for v in hero.variants) >= 0.95
    assert (hero.srm_warning, layout.srm_warning) == (False, True)

    page.set_viewport_size({"width": 1280, "height": 900})
    response = page.goto(sink_url + "/")
    assert response is not None and response.ok
    policy = response.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "script-src 'nonce-" in policy
    assert page.title() == "Experiment results (local) · optibase-edge"

    views = shown(page)
    assert_shows(views, results)
    # The counts, by hand: the userId's purchase went to bold, the stranger's signup nowhere.
    assert converted(views, "hero", "signup") == [40, 68, 41]
    assert converted(views, "hero", "pricing") == [80, 50, 78]
    assert converted(views, "hero", "purchase") == [0, 1, 0]
    assert view(views, "layout").srm.data["warning"] == "true"
    assert page.locator("#results [role=alert]").count() == 1
    assert page.locator("#calls-count").inner_text() == str(len(FIRST))
    page.screenshot(path=artefact_path("dashboard.png"), full_page=True)

    # New events while the page is open: the results follow, the page stays the same page.
    page.wait_for_function("document.getElementById('feed-status').textContent === 'live'")
    page.evaluate("window.__samePage = true")
    post(sink_url, MORE)
    page.wait_for_function(
        """() => {
          const cell = document.querySelector(
            '[data-test=hero] [data-conversion=signup] tr[data-variant=social]'
            + ' [data-field=visitors]');
          return cell !== null && cell.dataset.value === "415";
        }""",
        timeout=UPDATE_TIMEOUT_MS,
    )
    assert page.evaluate("window.__samePage") is True
    views = shown(page)
    assert_shows(views, expected(FIRST + MORE))
    assert converted(views, "hero", "signup") == [40, 68, 51]
    page.screenshot(path=artefact_path("dashboard-updated.png"), full_page=True)

    # The raw calls, collapsed below the results, were kept live too.
    assert page.locator("#raw-calls").get_attribute("open") is None
    assert page.locator("#calls-count").inner_text() == str(len(FIRST + MORE))
    page.click("#raw-calls summary")
    assert MORE[-1]["messageId"] in page.locator("#feed-body").inner_text()
    page.screenshot(path=artefact_path("dashboard-raw-calls.png"), full_page=True)
    assert_clean(page, errors)

"""Scheduled tests start and end on time, on every page, with no restart.

Which tests are running is worked out once per schedule epoch (the span between
two starts or ends), not per request; these tests move the clock across each
boundary and check what a visitor is shown, what their tag says and what is sent.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import (
    Batch,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
    get_visitor,
)
from tests.support.user_agents import AS_A_BROWSER

START = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(days=7)
TAG = re.compile(r'data-optibase-variants="([^"]*)"')


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def time(self) -> float:
        return self.now

    def move_to(self, at: datetime) -> None:
        self.now = at.timestamp()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(START - timedelta(hours=1))
    monkeypatch.setattr("optibase_edge._optibase.time.time", clock.time)
    return clock


def site(sent: list[dict[str, Any]]) -> Starlette:
    def record(batch: Batch) -> Outcome:
        sent.extend(batch.decoded())
        return Outcome(200)

    ob = Optibase(
        tests=[
            Test("always", [Variant("a"), Variant("b")], pages=["/"]),
            Test(
                "launch",
                [Variant("old"), Variant("new")],
                pages=["/"],
                starts_at=START,
                ends_at=END,
            ),
        ],
        secret_keys=["schedule-secret-" + "s" * 32],
        segment_write_key="wk",
        transport=MockTransport(record),
        inject_script=True,
    )

    async def page(request: Request) -> HTMLResponse:
        shown = get_visitor(request).variant("launch")
        return HTMLResponse(f"<html><head></head><body>{shown}</body></html>")

    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app


def tagged_tests(body: str) -> set[str]:
    found = TAG.search(body)
    assert found is not None, body
    variants = json.loads(found.group(1).replace("&quot;", '"'))
    return {v["test_id"] for v in variants}


def viewed(sent: list[dict[str, Any]], test_id: str) -> int:
    return sum(
        1
        for m in sent
        if m.get("event") == "Experiment Viewed" and m["properties"]["test_id"] == test_id
    )


def test_a_scheduled_test_runs_from_its_start_to_its_end(clock: Clock) -> None:
    sent: list[dict[str, Any]] = []
    with TestClient(site(sent), headers=dict(AS_A_BROWSER)) as client:
        before = client.get("/")
        assert "<body>None</body>" in before.text
        assert tagged_tests(before.text) == {"always"}

        clock.move_to(START)
        during = client.get("/")
        shown = re.search(r"<body>(\w+)</body>", during.text)
        assert shown is not None and shown.group(1) in ("old", "new")
        assert tagged_tests(during.text) == {"always", "launch"}
        # The same visitor, the same variant, on the next page.
        assert f"<body>{shown.group(1)}</body>" in client.get("/").text

        clock.move_to(END)
        after = client.get("/")
        assert "<body>None</body>" in after.text
        assert tagged_tests(after.text) == {"always"}
    # Leaving the client ran the lifespan's shutdown, which flushed what was queued.
    assert viewed(sent, "launch") == 1
    assert viewed(sent, "always") == 1

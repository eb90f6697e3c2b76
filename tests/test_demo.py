"""The demo (demo_site.app + demo_site.sink) over real HTTP, without a browser.

The site and the sink run under real uvicorn on 127.0.0.1, the site's Segment
delivery pointed at the sink, exactly as ``python -m demo_site`` wires them;
a cookie-keeping httpx2 client plays the visitor, and what the sink received
is read back through its API and dashboard. The last tests start
``python -m demo_site`` itself in a subprocess.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from demo_site.app import PLANS, create_demo_app
from demo_site.experiment import CONVERSIONS, HEADLINES, TESTS, VARIANT_NAMES
from demo_site.landing import create_edge_app, create_landing_origin
from demo_site.sink import create_sink_app
from demo_site.webflow_page import BLOCK_TESTS as LANDING_TESTS
from tests.support.dashboard import read_results, view
from tests.support.net import LOOPBACK, bound_socket, free_port
from tests.support.polling import wait_until
from tests.support.server import serve
from tests.support.user_agents import DESKTOP_USER_AGENT

ROOT = Path(__file__).resolve().parents[1]
WRITE_KEY = "demo"
SECRET_KEY = "test-secret-key-for-the-demo-0123456789"
# A browser's user agent: the events should look like a real visitor's.
USER_AGENT = DESKTOP_USER_AGENT
DEADLINE = 5.0  # for events to reach the sink (flush_interval is 0.2 s)
SETTLE = 0.5  # after the expected events arrived, time for unexpected extras to show up
POLL = 0.05  # between two looks at the sink: each one is an HTTP request


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Demo:
    site_url: str
    sink_url: str
    app: Starlette  # the site, unwrapped: app.state.optibase


@contextmanager
def run_demo(
    db_path: Path, wrap: Callable[[Starlette], Any] | None = None, **settings: Any
) -> Iterator[Demo]:
    """The sink, then the site reporting to it; the site stops (and flushes) first.

    The sink knows the site's tests and conversions, as ``python -m demo_site`` tells it.
    """
    sink = create_sink_app(str(db_path), write_key=WRITE_KEY, tests=TESTS, conversions=CONVERSIONS)
    with serve(sink) as sink_url:
        app = create_demo_app(
            segment_endpoint=sink_url, write_key=WRITE_KEY, secret_keys=[SECRET_KEY], **settings
        )
        with serve(wrap(app) if wrap else app) as site_url:
            yield Demo(site_url, sink_url, app)


def sink_calls(sink_url: str, visitor_id: str) -> list[dict[str, Any]]:
    """Every call the sink stored for *visitor_id* (duplicates included), oldest first."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        response = httpx2.get(
            f"{sink_url}/api/calls", params={"after": after, "limit": 1000}, timeout=5
        )
        response.raise_for_status()
        page: list[dict[str, Any]] = response.json()
        found += [c for c in page if c["anonymous_id"] == visitor_id]
        if len(page) < 1000:
            return found
        after = page[-1]["id"]


def tracks(calls: list[dict[str, Any]], event: str, **properties: Any) -> list[dict[str, Any]]:
    return [
        c
        for c in calls
        if c["type"] == "track"
        and c["event"] == event
        and all(c["properties"].get(k) == v for k, v in properties.items())
    ]


def conversions(calls: list[dict[str, Any]], conversion_id: str) -> list[dict[str, Any]]:
    return tracks(calls, "Conversion Triggered", conversion_id=conversion_id)


def wait_for_calls(
    sink_url: str,
    visitor_id: str,
    ready: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout: float = DEADLINE,
) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        calls = sink_calls(sink_url, visitor_id)
        return calls if ready(calls) else None

    return wait_until(check, what, timeout=timeout, interval=POLL)


def csp_nonce_of(response: httpx2.Response) -> str:
    policy = response.headers["content-security-policy"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    match = re.fullmatch(r"\s*script-src 'nonce-([A-Za-z0-9_\-+/=]+)'\s*", script_src)
    assert match, f"script-src must allow only a nonce: {policy!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with run_demo(tmp_path_factory.mktemp("demo") / "sink.sqlite3") as running:
        yield running


@pytest.fixture
def client(demo: Demo) -> Iterator[httpx2.Client]:
    """A new visitor: an empty cookie jar."""
    with httpx2.Client(
        base_url=demo.site_url, headers={"User-Agent": USER_AGENT}, timeout=5
    ) as http:
        yield http


def visit_home(client: httpx2.Client) -> tuple[str, str, httpx2.Response]:
    """GET / and return (visitor_id, variant) as the server reports them, and the page."""
    page = client.get("/")
    assert page.status_code == 200
    variants = client.get("/_optibase/variants").json()
    assert [v["test_id"] for v in variants["variants"]] == ["hero"]
    return variants["visitor_id"], variants["variants"][0]["variant_id"], page


# --------------------------------------------------------------------------- the site


def test_home_renders_the_assigned_headline_and_reports_it(
    demo: Demo, client: httpx2.Client
) -> None:
    visitor_id, variant, page = visit_home(client)
    assert variant in HEADLINES
    assert f'<h1 id="headline" data-variant="{variant}">{HEADLINES[variant]}</h1>' in page.text
    assert f'<code id="visitor-id">{visitor_id}</code>' in page.text
    # The injected tag carries the same assignment and this response's CSP nonce.
    tag = re.search(r"<script src=\"/_optibase/script\.js[^>]*>", page.text)
    assert tag, "the middleware should inject the client script"
    assert f'data-optibase-visitor="{visitor_id}"' in tag[0]
    variants = re.search(r'data-optibase-variants="([^"]*)"', tag[0])
    assert variants is not None
    assert json.loads(html.unescape(variants[1])) == [{"test_id": "hero", "variant_id": variant}]
    assert f'nonce="{csp_nonce_of(page)}"' in tag[0]

    calls = wait_for_calls(
        demo.sink_url,
        visitor_id,
        lambda c: bool(tracks(c, "Experiment Viewed")) and any(x["type"] == "identify" for x in c),
        "Identify and Experiment Viewed",
    )
    identify = [c for c in calls if c["type"] == "identify"]
    viewed = tracks(calls, "Experiment Viewed")
    assert len(identify) == 1 and len(viewed) == 1
    assert identify[0]["id"] < viewed[0]["id"], "Identify goes out before the tracks"
    assert viewed[0]["properties"]["test_id"] == "hero"
    assert viewed[0]["properties"]["variant_id"] == variant
    assert viewed[0]["context"]["page"]["url"] == demo.site_url + "/"
    assert viewed[0]["context"]["userAgent"] == USER_AGENT

    # A returning visitor keeps the variant, and is not reported again.
    again = client.get("/")
    assert f'data-variant="{variant}"' in again.text
    time.sleep(SETTLE)
    calls = sink_calls(demo.sink_url, visitor_id)
    assert len(tracks(calls, "Experiment Viewed")) == 1
    assert len([c for c in calls if c["type"] == "identify"]) == 1


def test_every_headline_is_served_to_someone(demo: Demo, client: httpx2.Client) -> None:
    seen: set[str] = set()
    for _ in range(45):  # P(a variant never drawn) = 3 * (2/3)**45, about 4e-8
        client.cookies.clear()
        page = client.get("/")
        match = re.search(r'<h1 id="headline" data-variant="(\w+)">(.*?)</h1>', page.text)
        assert match, page.text[:500]
        assert HEADLINES[match[1]] == match[2]
        seen.add(match[1])
    assert seen == set(HEADLINES)


def test_each_response_has_a_fresh_strict_csp_nonce(client: httpx2.Client) -> None:
    first, second = client.get("/"), client.get("/")
    assert csp_nonce_of(first) != csp_nonce_of(second)
    policy = first.headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert f'<style nonce="{csp_nonce_of(first)}">' in first.text
    for path in ("/pricing", "/signup", "/thanks?plan=solo", "/_optibase/variants"):
        assert "content-security-policy" in client.get(path).headers


def test_pricing_is_a_page_view_conversion(demo: Demo, client: httpx2.Client) -> None:
    visitor_id, variant, _ = visit_home(client)
    page = client.get("/pricing")
    assert page.status_code == 200
    for plan_id in PLANS:
        assert f'<input type="hidden" name="plan" value="{plan_id}">' in page.text
    calls = wait_for_calls(
        demo.sink_url, visitor_id, lambda c: bool(conversions(c, "pricing")), "pricing conversion"
    )
    [pricing] = conversions(calls, "pricing")
    assert pricing["properties"] == {
        "conversion_id": "pricing",
        "conversion_type": "PAGE_VIEW",
        "origin_url": demo.site_url + "/pricing",
        "variants": [{"test_id": "hero", "variant_id": variant}],
    }


def test_buy_is_a_programmatic_conversion(demo: Demo, client: httpx2.Client) -> None:
    visitor_id, variant, _ = visit_home(client)
    bought = client.post("/buy", data={"plan": "studio"})
    assert bought.status_code == 303
    assert bought.headers["location"] == "/thanks?plan=studio"
    thanks = client.get(bought.headers["location"])
    assert '<strong id="plan-name">Studio</strong>' in thanks.text

    calls = wait_for_calls(
        demo.sink_url, visitor_id, lambda c: bool(conversions(c, "purchase")), "purchase"
    )
    [purchase] = conversions(calls, "purchase")
    assert purchase["properties"]["conversion_type"] == "PROGRAMMATIC"
    assert purchase["properties"]["origin_url"] == demo.site_url + "/buy"
    assert purchase["properties"]["variants"] == [{"test_id": "hero", "variant_id": variant}]
    assert purchase["context"]["page"]["referrer"] == ""


def test_buy_refuses_an_unknown_plan_without_converting(demo: Demo, client: httpx2.Client) -> None:
    visitor_id, _, _ = visit_home(client)
    assert client.post("/buy", data={"plan": "platinum"}).status_code == 400
    assert client.post("/buy", content=b"plan=" + b"x" * 5000).status_code == 413
    client.get("/pricing")  # a later event, to know the queue got past the refusals
    calls = wait_for_calls(
        demo.sink_url, visitor_id, lambda c: bool(conversions(c, "pricing")), "pricing"
    )
    assert conversions(calls, "purchase") == []


def test_new_visitor_button_starts_over(client: httpx2.Client) -> None:
    first, _, _ = visit_home(client)
    reset = client.post("/new-visitor")
    assert reset.status_code == 303 and reset.headers["location"] == "/"
    assert "optibase_vid" not in client.cookies
    second, _, _ = visit_home(client)
    assert second != first


def test_sink_dashboard_shows_the_results(demo: Demo, client: httpx2.Client) -> None:
    visitor_id, variant, page = visit_home(client)
    assert f'href="{demo.sink_url}/"' in page.text  # the site links to the dashboard
    client.get("/pricing")
    client.post("/buy", data={"plan": "solo"})
    wait_for_calls(
        demo.sink_url,
        visitor_id,
        lambda c: bool(conversions(c, "pricing") and conversions(c, "purchase")),
        "pricing and purchase",
    )
    dashboard = httpx2.get(demo.sink_url + "/", timeout=5)
    assert dashboard.status_code == 200
    assert visitor_id in dashboard.text  # in the raw calls
    hero = view(read_results(dashboard.text), "hero")
    assert hero.heading == "Home page headline hero"  # named by the site's configuration
    pricing, purchase = hero.table("pricing").row(variant), hero.table("purchase").row(variant)
    assert pricing.label.startswith(f"{VARIANT_NAMES[variant]} {variant}")
    visitors = int(pricing.cells["visitors"].value)
    assert visitors >= 1
    assert int(pricing.cells["converted"].value) >= 1
    assert int(purchase.cells["converted"].value) >= 1
    # The same numbers as the JSON API.
    api = httpx2.get(demo.sink_url + "/api/results", timeout=5).json()
    [report] = [t for t in api["tests"] if t["test_id"] == "hero"]
    [stats] = [v for v in report["variants"] if v["variant_id"] == variant]
    assert stats["visitors"] == visitors
    assert stats["conversions"]["purchase"]["visitors"] == int(purchase.cells["converted"].value)


def test_nothing_lost_or_failed(demo: Demo) -> None:
    """Runs last in this module: every event so far was delivered to the sink."""
    ob = demo.app.state.optibase
    wait_until(lambda: ob.stats()["pending"] == 0, "the queue to drain", timeout=DEADLINE)
    stats = ob.stats()
    assert stats["sent"] > 0
    assert stats["failed"] == stats["dropped"] == stats["retried"] == 0, stats


# --------------------------------------------------------------------------- python -m demo_site


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            pytest.fail(f"python -m demo_site exited early: {process.communicate()}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(listening, f"python -m demo_site to listen on port {port}", timeout=timeout)


def start_demo(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPTIBASE_SECRET_KEYS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "demo_site", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_python_m_demo_site_starts_serves_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    site_port, sink_port, edge_port = free_port(), free_port(), free_port()
    db = tmp_path / "sink.sqlite3"
    process = start_demo(
        "--port", str(site_port), "--sink-port", str(sink_port), "--edge-port", str(edge_port),
        "--db", str(db), "--allow-host", "demo.test",
    )  # fmt: skip
    try:
        for port in (site_port, sink_port, edge_port):
            wait_for_port(port, process)
        site, sink = f"http://127.0.0.1:{site_port}", f"http://127.0.0.1:{sink_port}"
        edge = f"http://127.0.0.1:{edge_port}"
        # The landing page through the edge: one block of each test is left.
        with httpx2.Client(base_url=edge, headers={"User-Agent": USER_AGENT}, timeout=5) as http:
            landing = http.get("/")
            assert landing.status_code == 200
            for test_id in LANDING_TESTS:
                assert landing.text.count(f'data-optibase-test="{test_id}"') == 1
            edge_visitor = http.get("/_optibase/variants").json()["visitor_id"]
        with httpx2.Client(base_url=site, headers={"User-Agent": USER_AGENT}, timeout=5) as http:
            home = http.get("/")
            assert home.status_code == 200 and 'id="signup"' in home.text
            visitor_id = http.get("/_optibase/variants").json()["visitor_id"]
            assert http.get("/pricing").status_code == 200
        dashboard = httpx2.get(sink + "/", timeout=5)
        assert dashboard.status_code == 200 and "<h1>Experiment results</h1>" in dashboard.text
        # The site's configuration reached the sink: the test is named, shown before any data.
        assert view(read_results(dashboard.text), "hero").heading == "Home page headline hero"
        for host, status in (("demo.test", 200), (f"localhost:{sink_port}", 200), ("x.test", 400)):
            assert httpx2.get(sink + "/", headers={"Host": host}, timeout=5).status_code == status
        # Stop at once: the events still queued must be flushed into the sink on the way out.
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "warning" not in err
    assert f"site:       {site}/" in out
    assert f"dashboard:  {sink}/" in out
    assert f"edge:       {edge}/" in out
    assert "stopped:" in out and "0 pending, 0 lost" in out, out
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT type, event FROM calls WHERE anonymous_id = ? ORDER BY id", (visitor_id,)
        ).fetchall()
        landing_rows = conn.execute(
            "SELECT type, event FROM calls WHERE anonymous_id = ? ORDER BY id", (edge_visitor,)
        ).fetchall()
    assert rows == [
        ("identify", None),
        ("track", "Experiment Viewed"),
        ("track", "Conversion Triggered"),
    ]
    assert landing_rows == [("identify", None)] + [("track", "Experiment Viewed")] * len(
        LANDING_TESTS
    )


def demo_that_stops(*args: str) -> tuple[int, str]:
    """``python -m demo_site`` expected to stop by itself: its exit status and stderr."""
    process = start_demo(*args)
    try:
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, err


def test_python_m_demo_site_reports_a_busy_port(tmp_path: Path) -> None:
    with bound_socket() as busy:
        busy.listen()
        port = busy.getsockname()[1]
        returncode, err = demo_that_stops("--port", str(port), "--sink-port", str(free_port()))
    assert returncode != 0
    assert f"cannot listen on 127.0.0.1:{port} for the site" in err
    assert "--port" in err


def test_python_m_demo_site_warns_when_told_to_listen_beyond_loopback() -> None:
    # The sink's port is taken, so the demo stops before anything listens on 0.0.0.0;
    # the warning comes before that, as soon as the arguments are read.
    with bound_socket() as busy:
        busy.listen()
        port = busy.getsockname()[1]
        _, err = demo_that_stops("--host", "0.0.0.0", "--sink-port", str(port), "--port", "0")
    assert "demo_site: warning: listening on 0.0.0.0, not a loopback address" in err
    assert "other machines can reach the sink" in err and "--allow-host" in err
    assert f"cannot listen on 0.0.0.0:{port} for the sink" in err  # so nothing did


def test_the_edge_keeps_the_sites_tests_in_a_shared_cookie(tmp_path: Path) -> None:
    keys = ["e" * 32]
    site_app = create_demo_app(
        segment_endpoint="http://127.0.0.1:9", write_key=WRITE_KEY, secret_keys=keys
    )
    with serve(create_landing_origin(), lifespan="off") as origin_url:
        edge_app = create_edge_app(
            origin_url, segment_endpoint="http://127.0.0.1:9", write_key=WRITE_KEY, secret_keys=keys
        )
        headers = {"User-Agent": USER_AGENT}
        # No lifespan: nothing is delivered, and nothing waits for the unreachable sink.
        site = TestClient(site_app, headers=headers)
        site.get("/")
        token = site.cookies["optibase_vid"]
        assert ".hero." in token
        edge = TestClient(edge_app, headers=headers, cookies={"optibase_vid": token})
        landing = edge.get("/")
        # One host name, two ports: the cookie the edge sets is the site's too.
        assert ".hero." in landing.cookies["optibase_vid"]
        assert ".landing_hero." in landing.cookies["optibase_vid"]

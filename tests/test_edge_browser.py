"""Edge mode, done as a site would do it: ``optibase-edge proxy`` in front of a static site.

The upstream is Python's own ``http.server`` serving files: a site that knows
nothing of this library. The edge runs as the command runs in production
(uvicorn, SIGTERM to stop, its delivery flushed at shutdown) and reports to a
Segment-compatible sink. A real Chromium visits through it: it sees one
variant's block, the same one on every reload, and its click converts; the
sink gets one Identify, one Experiment Viewed and one Conversion Triggered.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.support.capture import SegmentCapture
from tests.support.net import LOOPBACK
from tests.support.polling import wait_until
from tests.support.servers import run_command

WRITE_KEY = "edge-key"
INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme</title></head>
<body>
<section data-optibase-test="hero" data-optibase-variant="control">
  <h1 class="headline">Build websites faster</h1></section>
<section data-optibase-test=hero data-optibase-variant=bold>
  <h1 class="headline">Ship a site by Friday</h1></section>
<button id="signup">Sign up</button>
<p><a href="/about.html">About</a></p>
</body></html>
"""
ABOUT = "<!doctype html><html><head><title>About</title></head><body><p>About us</p></body></html>"
CONFIG = """
secret_keys = ["{key}"]
segment_write_key = "{write_key}"
segment_endpoint = "{sink}"
flush_interval = 0.1

[[tests]]
id = "hero"
variants = ["control", "bold"]

[[conversions]]
id = "signup"
type = "CLICK"
selector = "#signup"
"""


def static_site(root: Path) -> Path:
    site = root / "site"
    site.mkdir()
    (site / "index.html").write_text(INDEX)
    (site / "about.html").write_text(ABOUT)
    (site / "favicon.ico").write_bytes(b"")  # the browser asks for it
    return site


def http_server(site: Path, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "http.server", str(port)),
        *("--bind", LOOPBACK, "--directory", str(site)),
    ]


def edge(upstream: str, config: Path, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "optibase_edge", "proxy", "--upstream", upstream),
        *("--config", str(config), "--host", LOOPBACK, "--port", str(port)),
    ]


def headlines(page: Any) -> list[str]:
    texts: list[str] = page.locator(".headline").all_inner_texts()
    return texts


def test_one_sticky_variant_one_exposure_and_a_click_through_the_edge(
    tmp_path: Path, page: Any, errors: list[str]
) -> None:
    site = static_site(tmp_path)
    config = tmp_path / "optibase.toml"
    with SegmentCapture(WRITE_KEY) as sink:
        config.write_text(CONFIG.format(key="e" * 32, write_key=WRITE_KEY, sink=sink.url))
        with (
            run_command("http.server", lambda port: http_server(site, port)) as upstream,
            run_command("optibase-edge proxy", lambda port: edge(upstream, config, port)) as url,
        ):
            page.goto(url + "/")
            shown = headlines(page)
            assert len(shown) == 1, shown
            for _ in range(3):
                page.reload()
                assert headlines(page) == shown
            page.goto(url + "/about.html")
            page.go_back()
            assert headlines(page) == shown
            page.click("#signup")
            wait_until(
                lambda: any(m.get("event") == "Conversion Triggered" for m in sink.messages),
                "the click's conversion at the sink",
            )
        # The edge has stopped: its delivery was flushed at shutdown.
        messages = sink.messages
    assert errors == []
    by_kind = sorted(m.get("event") or m["type"] for m in messages)
    assert by_kind == ["Conversion Triggered", "Experiment Viewed", "identify"]
    viewed = next(m for m in messages if m.get("event") == "Experiment Viewed")
    variant = viewed["properties"]["variant_id"]
    assert shown == [{"control": "Build websites faster", "bold": "Ship a site by Friday"}[variant]]
    conversion = next(m for m in messages if m.get("event") == "Conversion Triggered")
    assert conversion["properties"]["variants"] == [{"test_id": "hero", "variant_id": variant}]
    assert len({m["anonymousId"] for m in messages}) == 1

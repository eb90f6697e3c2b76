"""8. Results: ``optibase-edge report`` on a million lines, and the statistics of one test.

The events file is what development mode writes (the Segment mapping's own
encoding, with a full request context on every message): for each visitor an
Identify and an Experiment Viewed of one of three variants, and for a third
of them a conversion, some by a user ID linked through a second Identify.

* ``report``: ``optibase-edge report EVENTS --json`` as a subprocess, start-up
  included, against reading the same file and parsing every line with
  ``json.loads`` in the same interpreter (the floor no JSON-lines reader goes
  under);
* ``one test's results``: attribution and every statistic of a test of four
  variants and three conversions, its messages already gathered (what the
  demo dashboard redoes on each update), small and large samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from optibase_edge import ConversionType
from optibase_edge._events import (
    ConversionTriggered,
    ExperimentViewed,
    Identify,
    RequestContext,
)
from optibase_edge._results import _Tally
from optibase_edge._segment import encode, to_message

from .config import Config
from .report import Row, SectionResult, fmt_ms

VARIANTS = ("control", "bold", "social")
CONTEXT = RequestContext(
    ip="203.0.113.9",
    user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    accept_language="en-GB,en;q=0.9",
    url="https://paperplane.example/?utm_source=newsletter&utm_campaign=spring",
    referrer="https://news.example/article",
)


def _lines(count: int) -> Iterator[bytes]:
    """About *count* lines of a site's development-mode events file."""
    visitor = 0
    written = 0
    now = time.time()
    while written < count:
        vid = f"{visitor:08x}-4c1e-4b7a-9d0e-5f6a7b8c9d0e"
        variant = VARIANTS[visitor % 3]
        yield encode(to_message(Identify(vid, None, now, None, CONTEXT)))
        yield encode(
            to_message(ExperimentViewed(vid, None, now, "hero", variant, None, None, CONTEXT))
        )
        written += 2
        if visitor % 3 == 0:
            user = f"user-{visitor}" if visitor % 2 else None
            if user:
                yield encode(to_message(Identify(vid, user, now, None, CONTEXT)))
                written += 1
            yield encode(
                to_message(
                    ConversionTriggered(
                        None if user else vid,
                        user,
                        now,
                        "signup",
                        ConversionType.CLICK,
                        CONTEXT.url,
                        (("hero", variant),),
                        False,
                        f"n{visitor}",
                        CONTEXT,
                    )
                )
            )
            written += 1
        visitor += 1


def _floor(path: Path) -> float:
    """Seconds to read *path* and ``json.loads`` every line: no reader does less."""
    t0 = time.perf_counter()
    with open(path, "rb") as file:
        for line in file:
            json.loads(line)
    return time.perf_counter() - t0


def _cli(path: Path) -> tuple[float, int]:
    """Seconds for ``optibase-edge report PATH --json`` in a fresh interpreter, and its tests."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [Path(sys.executable).with_name("optibase-edge"), "report", str(path), "--json"],
        check=True,
        capture_output=True,
    ).stdout
    return time.perf_counter() - t0, len(json.loads(out)["tests"])


def _statistics_ms(counts: dict[str, tuple[int, int]], repeat: int) -> float:
    """Milliseconds for one test's results (attribution and statistics) once gathered."""
    tally = _Tally()
    for variant, (visitors, converted) in counts.items():
        for i in range(visitors):
            tally.add(
                {
                    "type": "track",
                    "event": "Experiment Viewed",
                    "anonymousId": f"{variant}{i}",
                    "properties": {"test_id": "t", "variant_id": variant},
                }
            )
            for conversion in ("a", "b", "c")[: 3 if i < converted else 0]:
                tally.add(
                    {
                        "type": "track",
                        "event": "Conversion Triggered",
                        "anonymousId": f"{variant}{i}",
                        "properties": {"conversion_id": conversion},
                    }
                )
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        tally.results()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def run(cfg: Config) -> SectionResult:
    res = SectionResult("results")
    with tempfile.TemporaryDirectory(prefix="optibase-bench-") as tmp:
        path = Path(tmp) / "optibase-events.jsonl"
        with open(path, "wb") as file:
            file.writelines(line + b"\n" for line in _lines(cfg.results_lines))
        size = path.stat().st_size
        floor = min(_floor(path) for _ in range(2))
        seconds, tests = min(_cli(path) for _ in range(2))
    assert tests == 1
    lines = cfg.results_lines
    res.raw |= {"lines": lines, "bytes": size, "report_s": seconds, "json_loads_s": floor}
    res.rows.append(
        Row(
            "results",
            f"report --json, {lines:,} lines ({size / 2**20:,.0f} MiB)",
            f"{seconds:.1f} s",
            f"json.loads only {floor:.1f} s",
            f"{seconds / floor:.2f}x",
            "well under 60 s",
            seconds < 30 if lines >= 1_000_000 else None,
        )
    )
    sizes = {"small": 200, "large": 20_000}
    for label, n in sizes.items():
        counts = {v: (n, n // (10 + i)) for i, v in enumerate(("a", "b", "c", "d"))}
        ms = _statistics_ms(counts, cfg.rounds)
        res.raw[f"statistics_{label}_ms"] = ms
        res.rows.append(
            Row(
                "results",
                f"one test's results, 4 variants x 3 conversions, {n:,} visitors each",
                fmt_ms(ms),
                "",
                "",
            )
        )
    return res

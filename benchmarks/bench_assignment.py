"""4. Assignment: µs per test assignment, ``assignment.choose`` vs GrowthBook ``run()``.

Two equivalent experiments: (a) two variants 50/50, everyone in the test;
(b) three variants weighted 2:1:1 with 80% of visitors in the test
(``traffic=0.8`` / ``coverage=0.8``). Each call assigns a different visitor id.

GrowthBook's ``run()`` reads the visitor from the instance's attributes, so it
runs on one ``GrowthBook(attributes={"id": ...})`` per visitor -- the SDK's
server-side pattern. Instances are built in chunks *outside* the timed
section; only the ``run()`` calls are timed (no tracking callback, like ours).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

from growthbook import Experiment, GrowthBook

from optibase_edge import Test, Variant
from optibase_edge._assignment import choose, compile_test

from .config import Config
from .report import Row, SectionResult, fmt_us
from .rounds import interleave, median, paired_ratio

CHUNK = 1000


def run(cfg: Config) -> SectionResult:
    result = SectionResult("assignment")
    n = cfg.assign_calls
    ids = [str(uuid.uuid4()) for _ in range(n)]
    cases = {
        "50/50": (
            compile_test(Test(id="hero", variants=[Variant("control"), Variant("bold")])),
            Experiment(key="hero", variations=["control", "bold"]),
        ),
        "2:1:1 @80%": (
            compile_test(
                Test(
                    id="cta",
                    variants=[Variant("a", weight=2), Variant("b"), Variant("c")],
                    traffic=0.8,
                )
            ),
            Experiment(
                key="cta", variations=["a", "b", "c"], weights=[0.5, 0.25, 0.25], coverage=0.8
            ),
        ),
    }
    shares: dict[str, Any] = {}
    raw_all: dict[str, Any] = {}
    for label, (plan, experiment) in cases.items():

        def ours(plan: Any = plan) -> float:
            t0 = time.perf_counter_ns()
            for vid in ids:
                choose(plan, vid)
            return (time.perf_counter_ns() - t0) / n / 1000.0

        def growthbook(experiment: Any = experiment) -> float:
            total = 0
            for start in range(0, n, CHUNK):
                chunk = [GrowthBook(attributes={"id": vid}) for vid in ids[start : start + CHUNK]]
                t0 = time.perf_counter_ns()
                for gb in chunk:
                    gb.run(experiment)
                total += time.perf_counter_ns() - t0
            return total / n / 1000.0

        raw = interleave({"ours": ours, "growthbook": growthbook}, cfg.rounds)
        raw_all[label] = raw
        ratio = paired_ratio(raw["growthbook"], raw["ours"])
        result.rows.append(
            Row(
                "4 assignment",
                f"µs per assignment ({label})",
                fmt_us(median(raw["ours"])),
                f"GrowthBook run() {fmt_us(median(raw['growthbook']))}",
                f"{ratio:.1f}x faster",
                "≥ 10x faster",
                ratio >= 10,
            )
        )
        sample = ids[:2000]
        shares[label] = {
            "ours": dict(Counter(choose(plan, v) for v in sample)),
            "growthbook": dict(
                Counter(
                    (r.value if r.inExperiment else None)
                    for r in (GrowthBook(attributes={"id": v}).run(experiment) for v in sample)
                )
            ),
        }
    result.raw = {
        "calls_per_round": n,
        "rounds": cfg.rounds,
        "us_per_call": raw_all,
        "variant_shares_sample_2000": shares,
    }
    return result

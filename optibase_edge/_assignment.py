"""Deterministic variant assignment: pure functions, no I/O.

A visitor's place in a test comes from a keyed hash of their ID: the test's
seed is the key, so tests are independent of each other, and the same
(seed, visitor) always lands in the same variant. The two halves of the hash
decide, independently, whether the visitor enters the test at all (traffic)
and which variant they see (weights), so changing the traffic share never
reshuffles variants. (Stickiness across configuration changes is the visitor's:
the cookie keeps what was shown, and a stored variant that still exists wins.)
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from ._config import Test

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Plan:
    """A test compiled for fast assignment."""

    test: Test
    variant_ids: tuple[str, ...]
    thresholds: tuple[float, ...]
    # {variant_id: path} for split-URL variants; empty for most tests.
    split_paths: Mapping[str, str]
    # A keyed hasher made once: each assignment copies it instead of keying anew.
    _hasher: Any = field(repr=False, compare=False)


def compile_test(test: Test) -> Plan:
    seed = test.seed if test.seed is not None else test.id
    key = hashlib.blake2b(seed.encode("utf-8", "surrogatepass"), digest_size=32).digest()
    # The total is the last running sum, not sum(): from Python 3.12 on, sum() rounds
    # differently, and an assignment must not move with the interpreter.
    running = list(accumulate(v.weight for v in test.variants))
    thresholds = tuple(c / running[-1] for c in running)
    hasher = hashlib.blake2b(digest_size=16, key=key, person=b"optibase-assign")
    split_paths = {v.id: v.path for v in test.variants if v.path is not None}
    return Plan(test, tuple(v.id for v in test.variants), thresholds, split_paths, hasher)


def buckets(plan: Plan, visitor_id: str) -> tuple[float, float]:
    """Two independent uniform numbers in [0, 1): (traffic, variant), from one hash."""
    hasher = plan._hasher.copy()
    hasher.update(visitor_id.encode("utf-8", "surrogatepass"))
    digest = hasher.digest()
    return (
        int.from_bytes(digest[:8], "big") / _SCALE,
        int.from_bytes(digest[8:], "big") / _SCALE,
    )


def choose(plan: Plan, visitor_id: str) -> str | None:
    """The variant *visitor_id* gets in a fresh assignment, or None if outside traffic."""
    traffic, variant = buckets(plan, visitor_id)
    if traffic >= plan.test.traffic:
        return None
    index = bisect_right(plan.thresholds, variant)
    # Float rounding can leave the last threshold a hair under 1.0.
    return plan.variant_ids[min(index, len(plan.variant_ids) - 1)]

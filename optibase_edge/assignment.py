"""Deterministic, sticky variant assignment: pure functions, no I/O.

A visitor's place in a test comes from a keyed hash of their ID: the test's
seed is the key, so tests are independent of each other, and the same
(seed, visitor) always lands in the same variant. Two separate hashes decide
whether the visitor enters the test at all (traffic) and which variant they see
(weights), so changing the traffic share never reshuffles variants.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from .config import Test

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Plan:
    """A test compiled for fast assignment."""

    test: Test
    key: bytes
    variant_ids: tuple[str, ...]
    thresholds: tuple[float, ...]
    # Keyed hashers made once: each assignment copies one instead of keying anew.
    _traffic_hasher: Any = field(repr=False, compare=False)
    _variant_hasher: Any = field(repr=False, compare=False)

    @property
    def test_id(self) -> str:
        return self.test.id


def compile_test(test: Test) -> Plan:
    seed = test.seed if test.seed is not None else test.id
    key = hashlib.blake2b(seed.encode("utf-8", "surrogatepass"), digest_size=32).digest()
    weights = [v.weight for v in test.variants]
    total = sum(weights)
    thresholds = tuple(c / total for c in accumulate(weights))
    return Plan(
        test,
        key,
        tuple(v.id for v in test.variants),
        thresholds,
        _hasher(key, b"traffic"),
        _hasher(key, b"variant"),
    )


def bucket(key: bytes, purpose: bytes, visitor_id: str) -> float:
    """A uniform number in [0, 1) for (key, purpose, visitor)."""
    return _bucket(_hasher(key, purpose), visitor_id)


def choose(plan: Plan, visitor_id: str) -> str | None:
    """The variant *visitor_id* gets in a fresh assignment, or None if outside traffic."""
    traffic = plan.test.traffic
    if traffic < 1 and _bucket(plan._traffic_hasher, visitor_id) >= traffic:
        return None
    index = bisect_right(plan.thresholds, _bucket(plan._variant_hasher, visitor_id))
    # Float rounding can leave the last threshold a hair under 1.0.
    return plan.variant_ids[min(index, len(plan.variant_ids) - 1)]


def _hasher(key: bytes, purpose: bytes) -> Any:
    return hashlib.blake2b(digest_size=8, key=key, person=purpose)


def _bucket(prototype: Any, visitor_id: str) -> float:
    hasher = prototype.copy()
    hasher.update(visitor_id.encode("utf-8", "surrogatepass"))
    return int.from_bytes(hasher.digest(), "big") / _SCALE


def resolve(plan: Plan, visitor_id: str, stored: str | None) -> str | None:
    """Sticky assignment: keep a stored variant that still exists, else choose afresh."""
    if stored is not None and stored in plan.variant_ids:
        return stored
    return choose(plan, visitor_id)

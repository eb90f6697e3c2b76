"""Delivery's accounting identity, as every test that reads ``stats()`` checks it."""

from __future__ import annotations

from collections.abc import Mapping


def balanced(stats: Mapping[str, int]) -> bool:
    """``accepted == sent + dropped + failed + deduped + pending``, as promised at every moment."""
    settled = stats["sent"] + stats["dropped"] + stats["failed"] + stats["deduped"]
    return stats["accepted"] == settled + stats["pending"]

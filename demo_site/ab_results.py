"""A/B results per test and variant, computed from the sink's stored tracks.

Pure functions over rows: :meth:`demo_site.call_store.CallStore.ab_tracks`
supplies them, the dashboard and ``GET /api/results`` show the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from demo_site.json_responses import JSONValue

EXPERIMENT_VIEWED: Final = "Experiment Viewed"
CONVERSION_TRIGGERED: Final = "Conversion Triggered"

ABTrack = tuple[int, str | None, str, str | None, str | None]
"""One stored A/B track: (row id, anonymousId, event, timestamp, properties as JSON)."""


def _id_text(value: JSONValue) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _test_variant(item: Mapping[str, JSONValue]) -> tuple[str, str] | None:
    test = _id_text(item.get("test_id")) or _id_text(item.get("experiment_id"))
    variant = _id_text(item.get("variant_id")) or _id_text(item.get("variation_id"))
    return (test, variant) if test and variant else None


def _listed_variants(value: JSONValue) -> set[tuple[str, str]]:
    """The (test, variant) pairs of a conversion's ``variants`` property."""
    pairs: set[tuple[str, str]] = set()
    if isinstance(value, list):
        for item in value:
            pair = _test_variant(item) if isinstance(item, dict) else None
            if pair:
                pairs.add(pair)
    elif isinstance(value, dict):  # tolerate the {test_id: variant_id} shorthand
        for test, variant in value.items():
            variant_text = _id_text(variant)
            if test and variant_text:
                pairs.add((test, variant_text))
    return pairs


def _event_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Exposure:
    row_id: int
    at: datetime | None
    pair: tuple[str, str]

    def before(self, row_id: int, at: datetime | None) -> bool:
        if self.at is not None and at is not None:
            return self.at <= at
        return self.row_id < row_id


def compute_results(tracks: Iterable[ABTrack]) -> dict[str, JSONValue]:
    """Results per test and variant from distinct-messageId A/B tracks.

    *exposed* counts distinct visitors (``anonymousId``) with an Experiment
    Viewed for the variant.  A conversion counts for a variant when its visitor
    was exposed to it, either per the conversion's ``variants`` list or by an
    Experiment Viewed no later than the conversion (event ``timestamp`` when
    both parse, else arrival order).  ``rate`` is conversions / exposed, None
    when nobody was exposed.
    """
    exposures: dict[str, list[_Exposure]] = {}
    exposed: dict[tuple[str, str], set[str]] = {}
    conversions: list[tuple[int, str, datetime | None, str, set[tuple[str, str]]]] = []
    for row_id, visitor, event, timestamp, properties_json in tracks:
        if not visitor or not properties_json:
            continue
        properties = json.loads(properties_json)
        if not isinstance(properties, dict):
            continue
        at = _event_time(timestamp)
        if event == EXPERIMENT_VIEWED:
            pair = _test_variant(properties)
            if pair:
                exposures.setdefault(visitor, []).append(_Exposure(row_id, at, pair))
                exposed.setdefault(pair, set()).add(visitor)
        else:
            conversion_id = _id_text(properties.get("conversion_id"))
            if conversion_id:
                listed = _listed_variants(properties.get("variants"))
                conversions.append((row_id, visitor, at, conversion_id, listed))

    converted: dict[tuple[str, str], dict[str, set[str]]] = {}
    conversion_ids: set[str] = set()
    pairs: set[tuple[str, str]] = set(exposed)
    for row_id, visitor, at, conversion_id, listed in conversions:
        conversion_ids.add(conversion_id)
        pairs |= listed
        seen = {e.pair for e in exposures.get(visitor, ()) if e.before(row_id, at)}
        for pair in listed | seen:
            converted.setdefault(pair, {}).setdefault(conversion_id, set()).add(visitor)

    ordered_ids = sorted(conversion_ids)
    tests: dict[str, list[dict[str, JSONValue]]] = {}
    for test_id, variant_id in sorted(pairs):
        n_exposed = len(exposed.get((test_id, variant_id), ()))
        by_conversion = converted.get((test_id, variant_id), {})
        tests.setdefault(test_id, []).append(
            {
                "variant_id": variant_id,
                "exposed": n_exposed,
                "conversions": {
                    cid: {
                        "visitors": len(by_conversion.get(cid, ())),
                        "rate": len(by_conversion.get(cid, ())) / n_exposed if n_exposed else None,
                    }
                    for cid in ordered_ids
                },
            }
        )
    return {
        "tests": [{"test_id": t, "variants": v} for t, v in tests.items()],
        "conversion_ids": ordered_ids,
    }

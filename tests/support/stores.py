"""A dedupe store put to the use delivery makes of it: shared by two sites."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from optibase_edge import Conversion, ConversionType, DedupeStore, Optibase

BOTH_SITES = "v-seen-by-both-sites"
FIRST_SITE = "v-seen-by-the-first-site"


async def conversions_from_two_sites(
    first: DedupeStore, second: DedupeStore, events_dir: Path
) -> Counter[str]:
    """How many times each visitor's once-only conversion went out from two sites.

    Two ``Optibase`` instances, as two processes or hosts would be, claim through
    *first* and *second* (one shared store, or two clients of the same one) and
    write what they deliver as JSON lines under *events_dir*. Both record the
    one-per-visitor conversion of :data:`BOTH_SITES`; the first also that of
    :data:`FIRST_SITE`. Nothing else is shared between the sites, so with a store
    that works each visitor's conversion goes out once. Closes the stores.
    """
    sites = [
        Optibase(
            conversions=[Conversion("upgrade", ConversionType.PROGRAMMATIC, one_per_visitor=True)],
            secret_keys=["s" * 32],
            events_path=events_dir / f"site-{i}.jsonl",
            dedupe_store=store,
        )
        for i, store in enumerate((first, second))
    ]
    for site in sites:
        await site.convert("upgrade", visitor_id=BOTH_SITES)
    await sites[0].convert("upgrade", visitor_id=FIRST_SITE)
    for site in sites:
        assert await site.flush(5)
    for site in sites:
        await site.aclose()
    lines = [
        json.loads(line)
        for path in sorted(events_dir.glob("site-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    return Counter(m["anonymousId"] for m in lines if m.get("event") == "Conversion Triggered")

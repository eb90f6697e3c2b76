"""5. Memory: bytes per entry of the dedupe LRUs at 1M entries (tracemalloc).

``LocalSeen`` (the request-path tier) and ``MemoryStore`` (the default shared
store, used by the sender) are each filled with ``mem_entries`` distinct
realistic once-only keys (``exposure\\x1f<uuid4>\\x1f<test>``), in interleaved
rounds. The figure is the traced memory still held by the structure after a
``gc.collect()``, divided by the entry count; the key strings are built
before tracing starts and are not held by either structure (both keep 64-bit
digests), so only the structures' own allocations count. Note:
tracemalloc measures Python allocations only, which is all these are.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc

from optibase_edge import MemoryStore
from optibase_edge._seen import LocalSeen

from .config import Config
from .report import Row, SectionResult
from .rounds import interleave, median, paired_ratio

TESTS = ("hero", "cta_color", "social_proof", "pricing_table", "checkout_steps")


def make_keys(n: int, seed: int = 1) -> list[str]:
    """*n* distinct once-only keys shaped like the library's (uuid4 visitor, test id)."""
    rnd = random.Random(seed)
    keys = []
    for i in range(n):
        h = f"{rnd.getrandbits(128):032x}"
        vid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        keys.append(f"exposure\x1f{vid}\x1f{TESTS[i % 5]}")
    return keys


def run(cfg: Config) -> SectionResult:
    result = SectionResult("memory")
    n = cfg.mem_entries
    # Built once, before tracing: only the structures' own allocations are traced.
    keys = make_keys(n)
    assert len(set(keys)) == n
    fill_seconds: dict[str, list[float]] = {"LocalSeen": [], "MemoryStore": []}

    def measure_local() -> float:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        seen = LocalSeen(maxsize=n)
        first = seen.first_time
        for key in keys:
            first(key)
        fill_seconds["LocalSeen"].append(time.perf_counter() - t0)
        assert len(seen) == n
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del seen
        return used / n

    def measure_store() -> float:
        async def fill() -> MemoryStore:
            store = MemoryStore(maxsize=n)
            claim = store.claim
            for key in keys:
                await claim(key, 3600.0)
            return store

        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        store = asyncio.run(fill())
        fill_seconds["MemoryStore"].append(time.perf_counter() - t0)
        assert len(store) == n
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del store
        return used / n

    raw = interleave(
        {"LocalSeen": measure_local, "MemoryStore": measure_store}, cfg.mem_rounds, warmup=0
    )
    for name in ("LocalSeen", "MemoryStore"):
        value = median(raw[name])
        result.rows.append(
            Row(
                "5 memory",
                f"{name} bytes/entry at {n:,} entries",
                f"{value:,.0f} B",
                f"{value * n / 2**20:,.0f} MiB total",
                "",
                "≤ 200 B",
                value <= 200,
            )
        )
    result.rows.append(
        Row(
            "5 memory",
            "MemoryStore vs LocalSeen bytes/entry",
            "",
            "",
            f"{paired_ratio(raw['MemoryStore'], raw['LocalSeen']):.2f}x",
            "",
            None,
        )
    )
    result.raw = {
        "entries": n,
        "rounds": cfg.mem_rounds,
        "bytes_per_entry": raw,
        "fill_seconds_under_tracemalloc": fill_seconds,
    }
    if n < 1_000_000:
        result.notes.append(f"memory: measured at {n:,} entries (quick mode), not 1M")
    return result

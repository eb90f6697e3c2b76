"""Side-by-side benchmarks for optibase_edge against its peers.

Run ``python -m benchmarks [--json PATH] [--quick] [--only SECTION ...]``.

Every figure is measured in the same process as its reference, in interleaved
rounds (A, B, A, B, ...; the order rotates every round), and reported as the
median of the rounds plus the ratio. Loads only ever target 127.0.0.1, and
every load loop is bounded in request count and in time.

Sections (see each module's docstring for exactly what is measured):

* ``middleware`` -- in-process ASGI overhead (bench_middleware)
* ``http``       -- uvicorn + wrk over loopback (bench_http)
* ``events``     -- emit cost and end-to-end delivery vs analytics-python (bench_events)
* ``assignment`` -- ``choose()`` vs GrowthBook ``run()`` (bench_assignment)
* ``memory``     -- dedupe LRU bytes per entry at 1M entries (bench_memory)
* ``faults``     -- site p99 with a hanging Segment endpoint vs a healthy one (bench_faults)
* ``screening``  -- telling a bot from a person, per request and how right (bench_screening)
* ``results``    -- ``optibase-edge report`` on a million lines (bench_results)
* ``rewrite``    -- MB/s of resolving variant blocks vs selectolax, html.parser (bench_rewrite)
"""

from pathlib import Path

# The checkout the suite runs from: servers start in it, and the machine facts hash its library.
REPO = Path(__file__).resolve().parent.parent

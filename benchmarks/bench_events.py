"""3. The event path: emitting from a view, and delivering to a local sink.

Emit cost (in process, interleaved rounds of ``ev_emit_calls`` each):

* ``ours_convert`` -- what a view does: ``await visitor.convert("purchase")`` on a
  fresh ``Visitor`` for a returning visitor (cookie holding 3 assignments), so
  every call pays the lazy cookie load, the request context read from the ASGI
  scope, the sorted active variants, the record, and ``Delivery.submit``;
* ``ours_submit`` -- (informational) ``ob._delivery.submit(event)`` of a prebuilt record;
* ``segment_track`` -- ``segment.analytics.Client(..., send=False).track(...)`` with the
  same properties and a context dict built from the same scope (as a user must).
  ``send=False`` skips only the final ``queue.put`` -- it slightly *favours*
  analytics-python, and keeps its consumer thread from competing while timed.

Our queue goes to a JSONL file and is drained with ``flush()`` between rounds
(never timed, never full: checked ``dropped == 0``).

End to end (interleaved rounds of ``ev_deliver_events`` each): a counting
``/v1/batch`` sink (Starlette/uvicorn, own process, 127.0.0.1). Ours:
``Optibase(segment_endpoint=sink, segment_write_key=..., secret_keys=[...])``,
``emit_conversion`` x N then ``await ob.flush()``. Peer: analytics-python
``Client(write_key, host=sink)`` (defaults: 1 consumer thread, batches of 100,
no gzip), ``track`` x N then ``client.flush()``. Both get the same buffer size
(N + 1000) so neither drops. Timed from the first emit until the sender says
all are delivered; the sink's count is checked to have risen by exactly N.
CPU is ``time.process_time()`` of this process (all threads) over the same
span, reported per 10,000 delivered events; the sink's CPU is recorded too.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from segment.analytics import Client as SegmentClient

from optibase_edge import Visitor
from optibase_edge._events import ConversionTriggered, raw_request, request_context

from .apps import WRITE_KEY, bench_optibase
from .bench_middleware import OTHER_COOKIES, make_scope, with_cookie
from .config import Config
from .loopback import LOOPBACK, http_json
from .report import Row, SectionResult, fmt_us
from .rounds import interleave_async, median, paired_ratio
from .servers import servers, sink_server


def segment_context(scope: dict[str, Any]) -> dict[str, Any]:
    """What an analytics-python user builds from a Starlette request for an equivalent call."""
    headers = {k: v.decode("latin-1") for k, v in scope["headers"]}
    host = headers.get("host", "")
    path = scope["path"]
    query = scope["query_string"].decode("latin-1")
    url = f"{scope['scheme']}://{host}{path}" + (f"?{query}" if query else "")
    context: dict[str, Any] = {
        "ip": scope["client"][0],
        "userAgent": headers.get("user-agent"),
        "page": {
            "url": url,
            "path": path,
            "search": f"?{query}" if query else "",
            "referrer": headers.get("referer", ""),
        },
    }
    lang = headers.get("accept-language")
    if lang:
        context["locale"] = lang.split(",", 1)[0].split(";", 1)[0].strip()
    return context


async def run(cfg: Config) -> SectionResult:
    result = SectionResult("events")
    tmp = Path(tempfile.mkdtemp(prefix="optibase-bench-ev-"))
    try:
        await _emit_cost(cfg, result, tmp)
        await _end_to_end(cfg, result)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return result


async def _emit_cost(cfg: Config, result: SectionResult, tmp: Path) -> None:
    n = cfg.ev_emit_calls
    ob = bench_optibase(events_path=str(tmp / "events.jsonl"))
    assert n < ob.settings.max_buffer_events
    await ob.start()
    plans, _ = ob._pages.for_path("/")
    vid = str(uuid.uuid4())
    token = ob._codec.encode(vid, {p.test.id: p.variant_ids[0] for p in plans})
    cookie = OTHER_COOKIES + b"; " + ob._cookie_name + b"=" + token.encode()
    scope = make_scope(with_cookie(cookie), path="/buy")
    scope["method"] = "POST"
    conversion = ob.settings.conversions_by_id["purchase"]
    variants = tuple(sorted((p.test.id, p.variant_ids[0]) for p in plans))
    prebuilt = ConversionTriggered(
        visitor_id=vid,
        user_id=None,
        timestamp=time.time(),
        conversion_id="purchase",
        conversion_type=conversion.type,
        origin_url="https://shop.example/buy",
        variants=variants,
        one_per_visitor=False,
        nonce=uuid.uuid4().hex,
        context=request_context(scope),
    )
    segment = SegmentClient(WRITE_KEY, host=f"http://{LOOPBACK}:9", send=False)
    properties_variants = [{"test_id": t, "variant_id": v} for t, v in variants]

    async def ours_convert() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await Visitor(ob, scope, token).convert("purchase")
        return (time.perf_counter_ns() - t0) / n / 1000.0

    async def ours_submit() -> float:
        submit = ob._delivery.submit
        t0 = time.perf_counter_ns()
        for _ in range(n):
            submit(prebuilt)
        return (time.perf_counter_ns() - t0) / n / 1000.0

    async def segment_track() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            segment.track(
                anonymous_id=vid,
                event="Conversion Triggered",
                properties={
                    "conversion_id": "purchase",
                    "conversion_type": "PROGRAMMATIC",
                    "origin_url": "https://shop.example/buy",
                    "variants": properties_variants,
                },
                context=segment_context(scope),
            )
        return (time.perf_counter_ns() - t0) / n / 1000.0

    async def drain(name: str) -> None:
        if name.startswith("ours"):
            assert await ob.flush(60), "could not drain the JSONL queue"

    raw = await interleave_async(
        {"ours_convert": ours_convert, "ours_submit": ours_submit, "segment_track": segment_track},
        cfg.ev_rounds,
        between=drain,
    )
    await ob.aclose(10)
    stats = ob.stats()
    assert stats["dropped"] == 0, stats
    ratio = paired_ratio(raw["segment_track"], raw["ours_convert"])
    s = "3 events"
    result.rows += [
        Row(
            s,
            "emit one conversion from a view",
            fmt_us(median(raw["ours_convert"])),
            f"analytics-python track() {fmt_us(median(raw['segment_track']))}",
            f"1/{ratio:.1f}",
            "≤ 1/8 of track()",
            ratio >= 8,
        ),
        Row(
            s,
            "bare enqueue: delivery.submit()",
            fmt_us(median(raw["ours_submit"])),
            f"track() {fmt_us(median(raw['segment_track']))}",
            f"1/{paired_ratio(raw['segment_track'], raw['ours_submit']):.1f}",
            "",
            None,
        ),
    ]
    result.raw["emit"] = {
        "calls_per_round": n,
        "rounds": cfg.ev_rounds,
        "us_per_call": raw,
        "optibase_stats": stats,
    }


async def _end_to_end(cfg: Config, result: SectionResult) -> None:
    n = cfg.ev_deliver_events
    with servers(sink_server("count")) as (sink,):
        ob = bench_optibase(
            segment_endpoint=sink.url,
            segment_write_key=WRITE_KEY,
            max_buffer_events=n + 1000,
        )
        await ob.start()
        segment = SegmentClient(WRITE_KEY, host=sink.url, max_queue_size=n + 1000)
        conversion = ob.settings.conversions_by_id["purchase"]
        scope = make_scope(with_cookie(OTHER_COOKIES), path="/buy")
        request = raw_request(scope, dict(scope["headers"]), "/buy", "", None)
        seg_ctx = segment_context(scope)
        page_url = request_context(scope).url
        variants = (("cta_color", "blue"), ("hero", "control"), ("social_proof", "logos"))
        properties_variants = [{"test_id": t, "variant_id": v} for t, v in variants]
        visitor_ids = [str(uuid.uuid4()) for _ in range(n)]
        details: dict[str, list[dict[str, Any]]] = {"ours": [], "analytics_python": []}

        def sink_count(who: str) -> int:
            return int(http_json(f"{sink.url}/count")["messages"].get(who, 0))

        async def ours() -> float:
            before = sink_count("optibase-edge")
            sink_cpu0 = sink.cpu_seconds()
            c0, t0 = time.process_time(), time.perf_counter()
            for vid in visitor_ids:
                ob._emit_conversion(conversion, vid, None, None, variants, request)
            c_emit = time.process_time() - c0
            ok = await ob.flush(120)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            delivered = sink_count("optibase-edge") - before
            assert ok and delivered == n, f"ours: flush={ok} delivered {delivered} of {n}"
            details["ours"].append(
                {
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "emit_cpu_s": c_emit,
                    "sink_cpu_s": _delta(sink.cpu_seconds(), sink_cpu0),
                }
            )
            return delivered / wall

        async def analytics_python() -> float:
            before = sink_count("analytics-python")
            sink_cpu0 = sink.cpu_seconds()
            c0, t0 = time.process_time(), time.perf_counter()
            for vid in visitor_ids:
                segment.track(
                    anonymous_id=vid,
                    event="Conversion Triggered",
                    properties={
                        "conversion_id": "purchase",
                        "conversion_type": "PROGRAMMATIC",
                        "origin_url": page_url,
                        "variants": properties_variants,
                    },
                    context=dict(seg_ctx),
                )
            c_emit = time.process_time() - c0
            await asyncio.to_thread(segment.flush)  # queue.join(): every batch answered
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            delivered = sink_count("analytics-python") - before
            assert delivered == n, f"analytics-python delivered {delivered} of {n}"
            details["analytics_python"].append(
                {
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "emit_cpu_s": c_emit,
                    "sink_cpu_s": _delta(sink.cpu_seconds(), sink_cpu0),
                }
            )
            return delivered / wall

        raw = await interleave_async(
            {"ours": ours, "analytics_python": analytics_python}, cfg.ev_rounds, warmup=1
        )
        # The warmup round's details come first: drop them so details pair with raw.
        for key in details:
            details[key] = details[key][-cfg.ev_rounds :]
        await ob.aclose(10)
        segment.shutdown()
        counts = http_json(f"{sink.url}/count")
    cpu10k = {k: [d["cpu_s"] / n * 10_000 for d in v] for k, v in details.items()}
    sink10k = {
        k: [d["sink_cpu_s"] / n * 10_000 for d in v if d["sink_cpu_s"] is not None]
        for k, v in details.items()
    }
    s = "3 events"
    result.rows += [
        Row(
            s,
            f"delivered events/s to local sink ({n:,}/round)",
            f"{median(raw['ours']):,.0f}/s",
            f"analytics-python {median(raw['analytics_python']):,.0f}/s",
            f"{paired_ratio(raw['ours'], raw['analytics_python']):.2f}x",
            "",
            None,
        ),
        Row(
            s,
            "CPU s per 10,000 delivered (this process)",
            f"{median(cpu10k['ours']):.3f} s",
            f"analytics-python {median(cpu10k['analytics_python']):.3f} s",
            f"1/{paired_ratio(cpu10k['analytics_python'], cpu10k['ours']):.2f}",
            "",
            None,
        ),
        Row(
            s,
            "sink CPU s per 10,000 received (info)",
            f"{median(sink10k['ours']):.3f} s" if sink10k["ours"] else "n/a",
            f"analytics-python {median(sink10k['analytics_python']):.3f} s"
            if sink10k["analytics_python"]
            else "n/a",
            "",
            "",
            None,
        ),
    ]
    result.raw["end_to_end"] = {
        "events_per_round": n,
        "rounds": cfg.ev_rounds,
        "events_per_second": raw,
        "cpu_seconds_per_10k": cpu10k,
        "sink_cpu_seconds_per_10k": sink10k,
        "details": details,
        "sink_counts": counts,
        "optibase_stats": ob.stats(),
    }


def _delta(after: float | None, before: float | None) -> float | None:
    if after is None or before is None:
        return None
    return after - before

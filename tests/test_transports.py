"""The transports, and ``Optibase(transport=...)``: where batches go, and what comes back."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import httpx2
import pytest

from optibase_edge import (
    Batch,
    Conversion,
    ConversionType,
    JsonLinesTransport,
    MockTransport,
    Optibase,
    Outcome,
    SegmentTransport,
)

pytestmark = pytest.mark.anyio

PURCHASE = Conversion("purchase", ConversionType.PROGRAMMATIC)
MESSAGES = (b'{"type":"track","messageId":"a"}', b'{"type":"identify","messageId":"b"}')


def test_a_batch_is_the_segment_body_around_its_messages() -> None:
    batch = Batch(MESSAGES, sent_at=0.0)
    assert json.loads(batch.body()) == {
        "batch": [json.loads(m) for m in MESSAGES],
        "sentAt": "1970-01-01T00:00:00.000Z",
    }
    assert batch.decoded() == [{"type": "track", "messageId": "a"}, json.loads(MESSAGES[1])]


async def test_segment_transport_posts_gzip_with_basic_auth() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(429, headers={"Retry-After": "7"})

    transport = SegmentTransport(
        "wk-1",
        base_url="https://events.eu1.segmentapis.com/",
        http_transport=httpx2.MockTransport(handler),
    )
    outcome = await transport.send(Batch(MESSAGES, sent_at=0.0))
    await transport.aclose()
    assert outcome == Outcome(429, retry_after=7.0)
    (request,) = seen
    assert str(request.url) == "https://events.eu1.segmentapis.com/v1/batch"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"wk-1:").decode()
    assert request.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(request.content))["batch"][0]["messageId"] == "a"
    assert "wk-1" not in repr(transport)


async def test_segment_transport_reports_a_network_error_as_status_0() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    transport = SegmentTransport("wk", http_transport=httpx2.MockTransport(handler))
    outcome = await transport.send(Batch(MESSAGES, sent_at=0.0))
    assert outcome.status == 0 and outcome.error is not None and "refused" in outcome.error


async def test_json_lines_transport_appends_one_message_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    transport = JsonLinesTransport(path)
    assert await transport.send(Batch(MESSAGES[:1], 0.0)) == Outcome(200)
    assert await transport.send(Batch(MESSAGES[1:], 0.0)) == Outcome(200)
    assert path.read_bytes().splitlines() == list(MESSAGES)
    unwritable = JsonLinesTransport(tmp_path / "missing-dir" / "events.jsonl")
    assert (await unwritable.send(Batch(MESSAGES, 0.0))).status == 0


async def test_optibase_sends_through_the_transport_it_is_given() -> None:
    received: list[dict[str, object]] = []

    async def handler(batch: Batch) -> Outcome:  # a coroutine function works too
        received.extend(batch.decoded())
        return Outcome(200)

    ob = Optibase(conversions=[PURCHASE], secret_keys=["k" * 32], transport=MockTransport(handler))
    await ob.convert("purchase", visitor_id="v-1")
    assert await ob.flush(5)
    await ob.aclose()
    assert [(m["event"], m["anonymousId"]) for m in received] == [("Conversion Triggered", "v-1")]
    assert ob.stats()["sent"] == 1


async def test_a_mock_transport_can_script_failures_that_delivery_retries() -> None:
    answers = [Outcome(503), Outcome(0, error="reset"), Outcome(200)]
    attempts: list[list[dict[str, object]]] = []

    def handler(batch: Batch) -> Outcome:
        attempts.append(batch.decoded())
        return answers.pop(0)

    ob = Optibase(conversions=[PURCHASE], transport=MockTransport(handler), flush_interval=0.01)
    await ob.convert("purchase", user_id="u-1")
    assert await ob.flush(10)
    await ob.aclose()
    assert len(attempts) == 3 and attempts[0] == attempts[2]  # the same message each time
    stats = ob.stats()
    assert (stats["sent"], stats["retried"]) == (1, 2)


async def test_development_mode_without_a_transport_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    ob = Optibase(conversions=[PURCHASE], events_path=path)
    await ob.convert("purchase", visitor_id="v-dev")
    assert await ob.flush(5)
    await ob.aclose()
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["anonymousId"] == "v-dev"


async def test_json_lines_file_is_capped_with_one_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    transport = JsonLinesTransport(path, max_bytes=100)
    line = len(MESSAGES[0]) + 1
    for _ in range(50):
        assert await transport.send(Batch(MESSAGES[:1], 0.0)) == Outcome(200)
        assert path.stat().st_size < 100 + line  # never more than one batch over the cap
    rotated = tmp_path / "events.jsonl.1"
    assert rotated.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "events.jsonl",
        "events.jsonl.1",
    ]
    # nothing is lost within what is kept: every line is a whole message
    lines = rotated.read_bytes().splitlines() + path.read_bytes().splitlines()
    assert set(lines) == {MESSAGES[0]} and len(lines) * line <= 2 * (100 + line)
    with pytest.raises(ValueError):
        JsonLinesTransport(path, max_bytes=0)

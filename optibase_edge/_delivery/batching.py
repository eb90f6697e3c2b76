"""Packing encoded messages into ``/v1/batch`` requests within Segment's limits."""

from __future__ import annotations

from collections import deque

from .._segment import BATCH_ENVELOPE_BYTES, MAX_BATCH_BYTES


def take_batch(ready: deque[bytes], max_events: int) -> list[bytes]:
    """Pop from the front of *ready* the longest run that fits one request.

    At most *max_events* messages and ``MAX_BATCH_BYTES`` of body, envelope and
    commas included; a lone message always fits (each is at most 32 KB).
    """
    batch: list[bytes] = []
    size = BATCH_ENVELOPE_BYTES  # '{"batch":[],"sentAt":"…"}'
    while ready and len(batch) < max_events:
        grown = size + len(ready[0]) + (1 if batch else 0)  # a comma between items
        if batch and grown > MAX_BATCH_BYTES:
            break
        batch.append(ready.popleft())
        size = grown
    return batch

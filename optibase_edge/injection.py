"""Streaming insertion of the client script tag into HTML responses."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

_MARKERS = (b"</head>", b"</body>")


def script_tag(src: str, visitor_id: str, variants: Mapping[str, str], nonce: str | None) -> bytes:
    """The ``<script>`` tag that loads the client script with this visitor's variants."""
    data = json.dumps([{"test_id": t, "variant_id": v} for t, v in variants.items()])
    attributes = [
        f'src="{html.escape(src)}"',
        f'data-optibase-visitor="{html.escape(visitor_id)}"',
        f'data-optibase-variants="{html.escape(data)}"',
        "defer",
    ]
    if nonce:
        attributes.append(f'nonce="{html.escape(nonce)}"')
    return f"<script {' '.join(attributes)}></script>".encode()


class HtmlInjector:
    """Inserts a snippet before the first ``</head>`` (else ``</body>``) of a streamed body.

    Only a few bytes are held back between chunks (enough to catch a marker or the
    script's own URL split across two chunks); the rest flows through at once. A
    body that already loads the script, or has neither marker, passes unchanged.
    """

    def __init__(self, snippet: bytes, already_present: bytes) -> None:
        self._snippet = snippet
        self._already_present = already_present.lower()
        self._held = b""
        self._done = False
        self._keep = max(len(already_present), *map(len, _MARKERS)) - 1

    def feed(self, chunk: bytes, more_body: bool) -> bytes:
        """The bytes to send now for *chunk*; everything held is released at the end."""
        if self._done:
            return chunk
        data = self._held + chunk
        lowered = data.lower()
        found = [i for i in (lowered.find(m) for m in _MARKERS) if i >= 0]
        at = min(found) if found else -1
        seen = lowered.find(self._already_present, 0, at if at >= 0 else len(lowered))
        if seen >= 0:
            self._done = True
            self._held = b""
            return data
        if at >= 0:
            self._done = True
            self._held = b""
            return data[:at] + self._snippet + data[at:]
        if not more_body:
            self._held = b""
            return data
        self._held = data[-self._keep :]
        return data[: -self._keep] if len(data) > self._keep else b""

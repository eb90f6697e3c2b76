"""Streaming insertion of the client script tag into HTML responses."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_MARKER = re.compile(rb"</(?:head|body)>", re.IGNORECASE)
_JSON = json.JSONEncoder(separators=(",", ":"))


def script_tag_opening(src: str, visitor_id: str, variants: Mapping[str, str]) -> str:
    """The start of the ``<script>`` tag that loads the client script for this visitor.

    It depends only on the visitor's cookie and the configuration, so callers may
    cache it; :func:`finish_script_tag` adds the per-request nonce.
    """
    data = _JSON.encode([{"test_id": t, "variant_id": v} for t, v in variants.items()])
    return (
        f'<script src="{_attribute(src)}" data-optibase-visitor="{_attribute(visitor_id)}"'
        f' data-optibase-variants="{_attribute(data)}" defer'
    )


def finish_script_tag(opening: str, nonce: str | None) -> bytes:
    if nonce:
        return f'{opening} nonce="{_attribute(nonce)}"></script>'.encode()
    return f"{opening}></script>".encode()


def _attribute(value: str) -> str:
    # Inside a double-quoted attribute only "&" and '"' are special; "<" and ">" are
    # escaped too so that no reader ever mistakes the value for markup.
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


class HtmlInjector:
    """Inserts a snippet before the first ``</head>`` (else ``</body>``) of a streamed body.

    Only a few bytes are held back between chunks (enough to catch a marker or the
    script's own URL split across two chunks); the rest flows through at once. A
    body that already loads the script, or has neither marker, passes unchanged.
    """

    def __init__(self, snippet: bytes, already_present: bytes, length_declared: bool) -> None:
        self.length_declared = length_declared  # the response's Content-Length must be redone
        self._snippet = snippet
        self._already_present = already_present
        self._held = b""
        self._done = False
        self._keep = max(len(already_present), len(b"</head>")) - 1

    def feed(self, chunk: bytes, more_body: bool) -> bytes:
        """The bytes to send now for *chunk*; everything held is released at the end."""
        if self._done:
            return chunk
        data = self._held + chunk if self._held else chunk
        match = _MARKER.search(data)
        end = match.start() if match else len(data)
        if data.find(self._already_present, 0, end) >= 0:
            self._done = True
            self._held = b""
            return data
        if match:
            self._done = True
            self._held = b""
            return data[:end] + self._snippet + data[end:]
        if not more_body:
            self._held = b""
            return data
        self._held = data[-self._keep :]
        return data[: -self._keep] if len(data) > self._keep else b""

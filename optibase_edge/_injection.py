"""Streaming insertion of the client script tag into HTML responses.

The tag goes before the first ``</head>`` (else ``</body>``) that a browser takes
for that end tag. To know which one that is, :class:`HtmlInjector` follows the
HTML tokenizer (WHATWG HTML, "Tokenization") as far as it matters here: comments;
the text of ``<script>`` (escaped states included), of ``<style>`` and the other
raw-text elements and of ``<title>`` and ``<textarea>``, which only their own end
tag ends; and ``<template>`` content, where the parser ignores those end tags.
Anything else is text to it. Two limits follow: attribute values are parsed in
the tags above only, so a raw "<" in another tag's attribute (template engines
write ``&lt;``) is taken for markup; and svg and math content is scanned as HTML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from ._html import (
    COMMENT,
    COMMENT_END,
    DATA,
    GT,
    LONGEST_HELD_TAG,
    NAME_END,
    RAW_TEXT,
    SCRIPT,
    TAG_REST,
    TEXT_ELEMENTS,
    TEXT_END,
    leave_text,
    one_of,
    open_comment,
    whole_element,
)

_JSON = json.JSONEncoder(separators=(",", ":"))


def script_tag_parts(src: str, variants: Mapping[str, str]) -> tuple[bytes, bytes]:
    """The start of the ``<script>`` tag that loads the client script, around the visitor ID.

    ``before + visitor_id + after + script_tag_end(nonce)`` is the whole tag for
    a visitor in *variants*; the ID goes in as it is, so it must be
    attribute-safe (a visitor ID is a UUID). The parts depend only on the
    variants and the configuration, so callers may cache them.
    """
    data = _JSON.encode([{"test_id": t, "variant_id": v} for t, v in variants.items()])
    return (
        f'<script src="{_attribute(src)}" data-optibase-visitor="'.encode(),
        f'" data-optibase-variants="{_attribute(data)}" defer'.encode(),
    )


def script_tag_end(nonce: str | None) -> bytes:
    """The end of the script tag: the per-request CSP *nonce*, if any, and the closing."""
    if nonce:
        return f' nonce="{_attribute(nonce)}"></script>'.encode()
    return b"></script>"


def _attribute(value: str) -> str:
    # Inside a double-quoted attribute only "&" and '"' are special; "<" and ">" are
    # escaped too so that no reader ever mistakes the value for markup.
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


_NOWHERE = RAW_TEXT + 1  # the scan's own state: where no end tag can follow
# What a tag opening in the data state does, beside the tokenizer's states.
_TEMPLATE, _TEMPLATE_END, _MARKER = range(_NOWHERE + 1, _NOWHERE + 4)


_ONE_TAG = NAME_END + b"(?:" + TAG_REST + b")?"
_OPENING = re.compile(
    b"<"
    + one_of(
        {
            b"!--": b"",
            b"script": whole_element(b"script"),
            **{name: whole_element(name) for name in TEXT_ELEMENTS},
            b"template": _ONE_TAG,
            b"/template": _ONE_TAG,
            b"plaintext": _ONE_TAG,
            b"/head": _ONE_TAG,
            b"/body": _ONE_TAG,
        }
    )
)
# Keyed by the three bytes after "<", lower-cased: they tell every opening apart.
_OPENINGS: dict[bytes, tuple[int, re.Pattern[bytes] | None]] = {
    b"!--": (COMMENT, None),
    b"scr": (SCRIPT, None),
    b"tem": (_TEMPLATE, None),
    b"/te": (_TEMPLATE_END, None),
    b"pla": (_NOWHERE, None),  # <plaintext>: the rest of the page is its text
    b"/he": (_MARKER, None),
    b"/bo": (_MARKER, None),
    **{name[:3]: (RAW_TEXT, TEXT_END[name]) for name in TEXT_ELEMENTS},
}
_LONGEST_OPENING = len(b"</template")  # what an opening needs before its name has ended
# Below this size, slicing and concatenating beats joining memoryviews (measured).
_SMALL_BODY = 16 * 1024


class HtmlInjector:
    """Inserts a snippet before the first ``</head>`` (else ``</body>``) of a streamed body.

    Only the marker's end tag counts, not the same bytes in a comment, a script
    or style, or ``<template>`` content (see the module's docstring). Only a few
    bytes are held back between chunks (enough to see a marker, a tag that
    changes the state, or the script's own URL split across two chunks; a tag
    of those whose ">" is still to come, up to 4 KiB); the rest flows through
    at once. A body that already loads the script, or has no marker, passes
    unchanged, byte for byte; nothing in it makes this raise.
    """

    __slots__ = (
        "_already_present",
        "_depth",
        "_done",
        "_end_tag",
        "_held",
        "_keep",
        "_pos",
        "_snippet",
        "_state",
        "inserted",
    )

    def __init__(self, snippet: bytes, already_present: bytes) -> None:
        self.inserted = False  # whether the snippet went in
        self._snippet = snippet
        self._already_present = already_present
        self._keep = len(already_present) - 1
        self._held = b""
        self._done = False
        self._state = DATA
        self._pos = 0  # where the scan resumes in the held bytes
        self._depth = 0  # of open <template> elements
        self._end_tag = COMMENT_END  # in RAW_TEXT: what ends it

    def feed(self, chunk: bytes, more_body: bool) -> bytes:
        """The bytes to send now for *chunk*; everything held is released at the end."""
        if self._done:
            return chunk
        data = self._held + chunk if self._held else chunk
        at = self._scan(data)
        end = len(data) if at is None else at
        if at is None and data.startswith(b"</", self._pos):
            # An end tag whose ">" is to come, where the tag may go: the script's URL
            # counts before it only.
            end = self._pos
        if data.find(self._already_present, 0, end) >= 0 or (
            at is None and (not more_body or self._state == _NOWHERE)
        ):
            self._done = True
            self._held = b""
            return data
        if at is not None:
            self._done = self.inserted = True
            self._held = b""
            if len(data) < _SMALL_BODY:
                return data[:at] + self._snippet + data[at:]  # cheapest for a small body
            view = memoryview(data)  # one copy of a large body, not three
            return b"".join((view[:at], self._snippet, view[at:]))
        cut = max(0, min(self._pos, len(data) - self._keep))
        self._held = data[cut:]
        self._pos -= cut
        return data[:cut]

    def _scan(self, data: bytes) -> int | None:
        """Tokenize *data* from the saved state: the offset of the marker, else None.

        Without a marker, saves the state and the offset to resume from: the end,
        or the start of what may not be whole yet (a marker, an opening, a tag).
        """
        pos, state, size = self._pos, self._state, len(data)
        while state != _NOWHERE:
            if state != DATA:
                state, pos, stalled = leave_text(state, self._end_tag, data, pos)
                if stalled:
                    break
                continue
            m = _OPENING.search(data, pos)
            if m is None:
                pos = max(pos, size - _LONGEST_OPENING)
                break
            if m.lastindex:  # a whole element
                pos = m.end()
                continue
            start, pos = m.span()
            opened, end_tag = _OPENINGS[data[start + 1 : start + 4].lower()]
            if opened == COMMENT:
                state, pos, stalled = open_comment(data, start)
                if stalled:
                    state = DATA
                    break
                continue
            if data[pos - 1] != GT:
                pos = start  # the tag's ">" is still to come: scan it again then
                break
            if opened == _MARKER:
                if self._depth == 0:
                    self._pos, self._state = pos, state
                    return start
            elif opened == _TEMPLATE:
                self._depth += 1
            elif opened == _TEMPLATE_END:
                self._depth = max(0, self._depth - 1)
            else:
                state = opened
                if end_tag is not None:
                    self._end_tag = end_tag
        if size - pos > LONGEST_HELD_TAG:
            state = _NOWHERE  # a tag too long to wait for the rest of
        self._pos, self._state = pos, state
        return None

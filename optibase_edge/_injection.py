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


def _case_blind(name: bytes) -> bytes:
    return b"".join(
        b"[%c%c]" % (c, c - 32) if 97 <= c <= 122 else re.escape(bytes([c])) for c in name
    )


def _one_of(alternatives: dict[bytes, bytes]) -> bytes:
    """A regex for any of the names, in any case, each followed by its own pattern.

    Grouped by first letter, in classes ([sS][cC]...) rather than with re.IGNORECASE,
    behind a lookahead for the first two letters: most of a page's "<" open none of
    the names, and the regex engine rejects them after that one test.
    """
    by_first: dict[bytes, list[bytes]] = {}
    for name, then in alternatives.items():
        by_first.setdefault(name[:1], []).append(_case_blind(name[1:]) + then)
    firsts, seconds = (
        b"".join(sorted({_case_blind(name[i : i + 1]).strip(b"[]") for name in alternatives}))
        for i in (0, 1)
    )
    groups = (
        _case_blind(first) + b"(?:" + b"|".join(rests) + b")" for first, rests in by_first.items()
    )
    return b"(?=[" + firsts + b"][" + seconds + b"])(?:" + b"|".join(groups) + b")"


_NAME_END = rb"(?=[\t\n\f\r />])"  # what ends a tag name (CR: the parser reads it as LF)
# The rest of a tag after its name, through its ">", which a quoted attribute value
# may contain (a quote opens a value only right after "="). Where it does not
# match, the tag goes on in the next chunk.
_TAG_REST = rb"""[^>=]*+(?:=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|(?=[^"']))[^>=]*+)*+>"""
_LT, _GT, _BANG, _SLASH = b"<>!/"  # as indexing bytes gives them

# The states of the scan: the tokenizer's, or none where no end tag can follow.
_DATA, _COMMENT, _SCRIPT, _ESCAPED, _DOUBLE_ESCAPED, _RAW_TEXT, _NOWHERE = range(7)
# What a tag opening in the data state does, beside those states.
_TEMPLATE, _TEMPLATE_END, _MARKER = range(7, 10)

# Elements whose text runs to their own end tag: raw text (noscript: as in a browser
# that runs scripts, the only kind this script is for), and title and textarea (RCDATA).
_TEXT_ELEMENTS = (
    b"style",
    b"title",
    b"textarea",
    b"noscript",
    b"iframe",
    b"xmp",
    b"noembed",
    b"noframes",
)


def _end_tag(name: bytes) -> bytes:
    return b"</" + _case_blind(name) + _NAME_END + b"(?:" + _TAG_REST + b")?"


def _whole(name: bytes) -> bytes:
    # The start tag, and when the element's text is short and holds no "<", the
    # text and the end tag too: a title, or a script loaded by URL, in one match.
    # (The group marks it: a match with lastindex set is a whole element.)
    end = b"</" + _case_blind(name) + _NAME_END + _TAG_REST
    return _NAME_END + b"(?:" + _TAG_REST + b"(?:[^<]{0,512}+(" + end + b"))?)?"


_ONE_TAG = _NAME_END + b"(?:" + _TAG_REST + b")?"
_OPENING = re.compile(
    b"<"
    + _one_of(
        {
            b"!--": b"",
            b"script": _whole(b"script"),
            **{name: _whole(name) for name in _TEXT_ELEMENTS},
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
    b"!--": (_COMMENT, None),
    b"scr": (_SCRIPT, None),
    b"tem": (_TEMPLATE, None),
    b"/te": (_TEMPLATE_END, None),
    b"pla": (_NOWHERE, None),  # <plaintext>: the rest of the page is its text
    b"/he": (_MARKER, None),
    b"/bo": (_MARKER, None),
    **{name[:3]: (_RAW_TEXT, re.compile(_end_tag(name))) for name in _TEXT_ELEMENTS},
}
_LONGEST_OPENING = len(b"</template")  # what an opening needs before its name has ended

_COMMENT_END = re.compile(rb"--!?>")
_SCRIPT_END = re.compile(b"<!--|" + _end_tag(b"script"))
_ESCAPED_EVENT = re.compile(
    b"-->|<" + _case_blind(b"script") + _NAME_END + b"|" + _end_tag(b"script")
)
_DOUBLE_ESCAPED_END = re.compile(b"-->|</" + _case_blind(b"script") + _NAME_END)
_SCRIPT_HOLD = len(b"</script")
# A tag the scan follows whose ">" has not come yet is held, with what follows it,
# up to this size; past it the injection is given up rather than hold on.
_LONGEST_HELD_TAG = 4096
# Below this size, slicing and concatenating beats joining memoryviews (measured).
_SMALL_BODY = 16 * 1024


def _search_from_lt(pattern: re.Pattern[bytes], data: bytes, pos: int) -> re.Match[bytes] | None:
    """``pattern.search(data, pos)`` for a *pattern* that starts with "<", in raw text.

    memchr finds the next "<" many times faster than the regex engine scans, and in a
    style sheet or most scripts that "<" opens the end tag.
    """
    at = data.find(b"<", pos)
    if at < 0:
        return None
    return pattern.match(data, at) or pattern.search(data, at + 1)


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
        "length_declared",
    )

    def __init__(self, snippet: bytes, already_present: bytes, length_declared: bool) -> None:
        self.length_declared = length_declared  # the response's Content-Length must be redone
        self._snippet = snippet
        self._already_present = already_present
        self._keep = len(already_present) - 1
        self._held = b""
        self._done = False
        self._state = _DATA
        self._pos = 0  # where the scan resumes in the held bytes
        self._depth = 0  # of open <template> elements
        self._end_tag = _COMMENT_END  # in _RAW_TEXT: what ends it

    def feed(self, chunk: bytes, more_body: bool) -> bytes:
        """The bytes to send now for *chunk*; everything held is released at the end."""
        if self._done:
            return chunk
        data = self._held + chunk if self._held else chunk
        at = self._scan(data)
        end = len(data) if at is None else at
        if data.find(self._already_present, 0, end) >= 0 or (
            at is None and (not more_body or self._state == _NOWHERE)
        ):
            self._done = True
            self._held = b""
            return data
        if at is not None:
            self._done = True
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
            if state == _DATA:
                m = _OPENING.search(data, pos)
                if m is None:
                    pos = max(pos, size - _LONGEST_OPENING)
                    break
                if m.lastindex:  # a whole element
                    pos = m.end()
                    continue
                start, pos = m.span()
                opened, end_tag = _OPENINGS[data[start + 1 : start + 4].lower()]
                if opened == _COMMENT:
                    if data.startswith(b">", pos) or data.startswith(b"->", pos):
                        pos = data.index(b">", pos) + 1  # "<!-->" and "<!--->" are whole
                    elif size - pos < 2:
                        pos = start  # which of those it is, the next chunk says
                        break
                    else:
                        state = _COMMENT
                    continue
                if data[pos - 1] != _GT:
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
            elif state == _SCRIPT:
                m = _search_from_lt(_SCRIPT_END, data, pos)
                if m is None:
                    pos = max(pos, size - _SCRIPT_HOLD)
                    break
                start, pos = m.span()
                if data[start + 1] == _BANG:
                    # From its dashes: "<!-->" leaves the escape as soon as it enters.
                    pos, state = pos - 2, _ESCAPED
                elif data[pos - 1] != _GT:
                    pos = start
                    break
                else:
                    state = _DATA
            elif state == _RAW_TEXT:
                m = _search_from_lt(self._end_tag, data, pos)
                if m is None:
                    pos = max(pos, size - _LONGEST_OPENING)
                    break
                start, pos = m.span()
                if data[pos - 1] != _GT:
                    pos = start
                    break
                state = _DATA
            elif state == _COMMENT:
                m = _COMMENT_END.search(data, pos)
                if m is None:
                    pos = max(pos, size - 3)
                    break
                pos, state = m.end(), _DATA
            elif state == _ESCAPED:  # after "<!--" in a script: "<script" escapes it further
                m = _ESCAPED_EVENT.search(data, pos)
                if m is None:
                    pos = max(pos, size - _SCRIPT_HOLD)
                    break
                start, pos = m.span()
                if data[start] != _LT:
                    state = _SCRIPT
                elif data[start + 1] != _SLASH:
                    state = _DOUBLE_ESCAPED
                elif data[pos - 1] != _GT:
                    pos = start
                    break
                else:
                    state = _DATA
            else:  # _DOUBLE_ESCAPED: "</script" here only ends that
                m = _DOUBLE_ESCAPED_END.search(data, pos)
                if m is None:
                    pos = max(pos, size - _SCRIPT_HOLD)
                    break
                start, pos = m.span()
                state = _SCRIPT if data[start] != _LT else _ESCAPED
        if size - pos > _LONGEST_HELD_TAG:
            state = _NOWHERE  # a tag too long to wait for the rest of
        self._pos, self._state = pos, state
        return None

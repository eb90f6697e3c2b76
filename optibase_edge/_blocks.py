"""Server-side variant blocks: one variant of each test kept in the HTML, the others removed.

An element whose start tag carries ``data-optibase-test="T"`` and
``data-optibase-variant="V"`` is a *block*: variant V of test T. As a body
streams through :class:`VariantBlocks`, each test's blocks of the variant the
caller chooses stay, byte for byte, and its other blocks are removed: start
tag, content and end tag. Everything else passes unchanged.

Which tags count. Only a real start tag is a block: not the same text in a
comment, in the text of a script, a style or another raw-text or RCDATA
element, in plain text, or in the value of another attribute. Attribute names
are read in any ASCII case; values may be double-quoted, single-quoted or bare,
and their character references are decoded. A tag with only one of the two
attributes, or with an empty value, is no block and is left alone. Of an
attribute written twice, the first counts, as in a browser.

Where a block ends. At its element's end, as a browser's parser sees it:

* at the end tag that matches it, the elements opened inside it tracked on a
  small stack (an end tag closes the latest open element of its name, and any
  opened after that). Void elements (``<img>``, ``<br>``...) have no content: a
  block on one is its tag alone. Inside a block, ``/>`` closes an element
  only where browsers honour it: on ``<svg>`` and ``<math>`` and inside them
  (foreign content);
* at the end of its own start tag if that ends with ``/>``: in foreign content
  that is where a browser ends it, and on an HTML element, where a browser
  ignores the ``/`` (a parse error), it is what its author meant. Outside
  blocks the namespace is only guessed (see the limits), so where unsure the
  block is taken to be less, never the rest of the page (what follows a kept
  ``<script .../>`` block is then read as markup, not as the script's text);
* before an end tag that matches nothing opened inside it (the parent's
  ``</div>`` after a ``<p>`` left open), which closes it: the rest of the page
  is never taken for the block. In a ``<template>`` opened inside the block,
  an end tag of nothing opened in that template is ignored, as browsers do;
* before a start tag that closes it by implication, as in a browser: a ``<p>``
  by the start of an element that closes a paragraph (``<div>``, ``<ul>``,
  ``<h1>``, another ``<p>``...) unless a scope boundary such as ``<button>`` or
  ``<table>`` is open inside it; ``<li>`` by ``<li>``; ``<dt>`` and ``<dd>`` by
  either; ``<option>`` by ``<option>`` or ``<optgroup>`` when nothing is open in
  it; ``<tr>`` by the next row or row group; ``<td>`` and ``<th>`` by the next cell,
  row or row group (unless a table is open inside them);
* at the end of the document.

Inside a block, comments, scripts (escaped states included), raw-text and
RCDATA elements, CDATA sections in foreign content and bogus comments are
followed as the tokenizer does: a ``</div>`` in a script is not an end tag.

Choosing. ``choose(test_id)`` is called once per test per document, at the
first block of that test, and returns the variant to keep. It returns None for
a test it does not know, and if it raises the error is logged and taken as
None: then the variant of that first block is kept. Either way, blocks of that
test with that variant stay and the others go. A block inside a removed block
goes with it: it is not resolved, ``choose`` is not called for it (it was not
served: no exposure may be sent for it) and it is not listed in ``blocks``. A
block inside a kept block is resolved on its own.

Streaming. Output does not depend on how the body is cut into chunks. Outside
blocks the scan jumps from one occurrence of ``data-optibase-test`` or of what
hides markup (a comment, a script, a raw-text element) to the next, as
:mod:`._injection` does; inside blocks it reads every tag. Only a few bytes
wait for the next chunk: a tag that may be or hold a block, or a tag the scan
must read, whose ``>`` has not come, up to 4 KiB; a removed block's bytes are
dropped as they come.

Limits, where reading less than a browser buys speed or bounded memory:

* outside blocks, only the tags named above are read whole, so a raw "<" in
  some other tag's attribute value is taken for markup (template engines write
  ``&lt;``), and a block attribute's tag is the one opened by the last "<" and a
  letter before it; there, "</" before neither a letter nor ">" (a bogus
  comment, to a browser) is taken for text;
* tags are read as :mod:`._html` reads them: an "=" that starts an attribute's
  name, or one in a bare value, is taken to start a value (both parse errors);
* a tag longer than 4 KiB is not waited for: it is no block, and it is taken to
  end at the first ">" after its first 4 KiB;
* the namespace of a block's own element is guessed from its name (an ``<svg>``
  or ``<math>`` element is foreign, any other HTML), since elements outside
  blocks are not tracked; an HTML element inside svg or math does not break
  out of it;
* past 512 elements open inside a block, the deeper ones are only counted: an
  end tag closes the latest of them, whatever its name.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from ._html import (
    BANG,
    COMMENT,
    COMMENT_END,
    DATA,
    LONGEST_HELD_TAG,
    NAME_END,
    RAW_TEXT,
    SCRIPT,
    SLASH,
    TAG_REST,
    TEXT_ELEMENTS,
    TEXT_END,
    leave_text,
    one_of,
    open_comment,
    whole_element,
)

logger = logging.getLogger("optibase_edge")


@dataclass(frozen=True, slots=True)
class Block:
    """A block as resolved: its test and variant, whether it stayed, where its start tag began."""

    test_id: str
    variant_id: str
    kept: bool
    offset: int  # of the start tag's "<" in the body


_TEST = b"data-optibase-test"
_VARIANT = b"data-optibase-variant"

# The scan's states beside the tokenizer's text states of _html.
_BOGUS_COMMENT, _CDATA, _PLAINTEXT, _LONG_TAG = range(RAW_TEXT + 1, RAW_TEXT + 5)

_START_TAG = re.compile(rb"<([a-zA-Z][^\t\n\f\r />]*+)" + TAG_REST)
# Inside a block, what follows a "<" that is not text: a tag, its rest (group 3) when its
# ">" has come, and for an element holding only text, that text and its end tag too
# (group 4: half the tags of the Webflow page's blocks, whose reading takes ~15% less
# time with it, measured); or "<!", "<?", or "</" before no letter.
_MARKUP = re.compile(
    rb"<(?:(/?)([a-zA-Z][^\t\n\f\r />]*+)(?:("
    + TAG_REST
    + rb")(?:[^<]*+(</(?i:\2)"
    + NAME_END
    + TAG_REST
    + rb"))?)?|[!?/])"
)
_TAG_NAME_END = re.compile(rb"[\t\n\f\r />]")
# One attribute of a tag already read whole: its name, and its value if any.
_ATTRIBUTE = re.compile(
    rb"""[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r /=>]*+)"""
    rb"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+("[^"]*+"|'[^']*+'|[^\t\n\f\r >]*+))?"""
)
# Outside blocks: what hides markup from the scan. "<!" opens a comment, or a bogus
# comment (a doctype too, for this purpose) that ends at the next ">", as does "<?".
# So does "</" before anything but a letter or ">", but that one is left out here:
# it costs a tenth of the scan (every end tag is tried for it; measured), for a typo.
_OPENING = re.compile(
    b"<(?:[!?]|"
    + one_of(
        {
            b"script": whole_element(b"script"),
            **{name: whole_element(name) for name in TEXT_ELEMENTS},
            b"plaintext": NAME_END,
        }
    )
    + b")"
)
_LONGEST_OPENING = len(b"<plaintext")  # what an opening needs before its name has ended
_QUESTION, _GT = b"?>"

# What a browser's parser makes of elements, for the ones a block may hold.
_VOID = frozenset(
    b"area base basefont bgsound br col embed frame hr image img input keygen link meta param "
    b"source track wbr".split()
)
_FOREIGN_ROOTS = frozenset((b"svg", b"math"))
# Start tags after which the state is not DATA, or the content foreign.
_NOT_PLAIN = frozenset((b"script", b"plaintext", *TEXT_ELEMENTS, *_FOREIGN_ROOTS))
# In svg or math, the elements whose content is HTML again.
_INTEGRATION_POINTS = frozenset(
    b"foreignobject desc title mi mo mn ms mtext annotation-xml".split()
)
# Start tags that close a <p>, if no scope boundary is open in it ("in button scope").
_CLOSE_P = frozenset(
    b"address article aside blockquote center details dialog dir div dl fieldset figcaption "
    b"figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr li dd dt listing main menu nav ol "
    b"p plaintext pre search section summary table ul xmp".split()
)
_BUTTON_SCOPE = frozenset(
    b"applet caption html table td th marquee object template button "
    b"mi mo mn ms mtext annotation-xml foreignobject desc title".split()
)
_TABLE_SCOPE = frozenset((b"html", b"table", b"template"))
# The "special" elements that may be open when a start tag comes (void and text
# elements never are); an <li> start looks for an <li> to close through all others
# and through address, div and p.
_SPECIAL = frozenset(
    b"address applet article aside blockquote body button caption center colgroup dd details "
    b"dir div dl dt fieldset figcaption figure footer form frameset h1 h2 h3 h4 h5 h6 head "
    b"header hgroup html li listing main marquee menu nav object ol p pre search section "
    b"select summary table tbody td template tfoot th thead tr ul "
    b"mi mo mn ms mtext annotation-xml foreignobject desc title".split()
)
_LIST_SCOPE = _SPECIAL - {b"address", b"div", b"p"}
_ROW_STARTS = frozenset(b"tr tbody thead tfoot caption col colgroup".split())
# A block's element -> the start tags that close it, and the elements which, open
# inside it, keep it open (None: any element open inside it does).
_IMPLIED_END: dict[bytes, tuple[frozenset[bytes], frozenset[bytes] | None]] = {
    b"p": (_CLOSE_P, _BUTTON_SCOPE),
    b"li": (frozenset((b"li",)), _LIST_SCOPE),
    b"dd": (frozenset((b"dd", b"dt")), _LIST_SCOPE),
    b"dt": (frozenset((b"dd", b"dt")), _LIST_SCOPE),
    b"option": (frozenset((b"option", b"optgroup")), None),
    b"tr": (_ROW_STARTS, _TABLE_SCOPE),
    b"td": (_ROW_STARTS | {b"td", b"th"}, _TABLE_SCOPE),
    b"th": (_ROW_STARTS | {b"td", b"th"}, _TABLE_SCOPE),
}
_NO_RULE: tuple[frozenset[bytes], None] = (frozenset(), None)
_DEEPEST = 512  # elements tracked open inside a block; deeper ones are counted


def may_hold_blocks(data: bytes) -> bool:
    """Whether *data* names the block attribute anywhere (in any case): if not, it holds none."""
    return _TEST in data.lower()


class VariantBlocks:
    """Rewrites a streamed HTML body, keeping one variant of each test (see the module).

    ``feed(chunk, more_body)`` returns the bytes to send now; with
    ``more_body=False`` it returns all it held. ``blocks`` lists the blocks
    resolved so far, in document order. Nothing in a body makes it raise, nor
    does ``choose``.
    """

    __slots__ = (
        "_choose",
        "_chosen",
        "_closers",
        "_deeper",
        "_drop_from",
        "_end_tag",
        "_held",
        "_long_close",
        "_long_name",
        "_offset",
        "_open",
        "_pos",
        "_removed",
        "_roots",
        "_state",
        "_tags_from",
        "blocks",
    )

    def __init__(self, choose: Callable[[str], str | None]) -> None:
        self.blocks: list[Block] = []
        self._choose = choose
        self._chosen: dict[str, str] = {}  # test -> the variant kept
        self._held = b""
        self._offset = 0  # of the held bytes in the body
        self._pos = 0  # where the scan resumes in them
        self._state = DATA
        self._end_tag = COMMENT_END  # in RAW_TEXT: what ends it
        self._tags_from = 0  # outside blocks: where the tag around an attribute may start
        # Inside a block: the elements open in the outermost one (name, foreign),
        # where blocks are among them, and the one removed, whose bytes are dropped
        # from _drop_from in the held bytes.
        self._open: list[tuple[bytes, bool]] = []
        self._roots: list[int] = []
        self._closers: frozenset[bytes] = frozenset()  # start tags that may close one of them
        self._removed = -1
        self._drop_from = -1
        self._deeper = 0  # elements open past _DEEPEST
        self._long_name = b""  # in _LONG_TAG: the start tag's name (empty: an end tag)
        self._long_close = -1  # for an end tag: the removed block it closes, where it ends

    def feed(self, chunk: bytes, more_body: bool) -> bytes:
        """The bytes to send now for *chunk*; everything held is released at the end."""
        data = self._held + chunk if self._held else chunk
        lowered = data.lower()  # where the attribute's name is found, in any case
        if not more_body and not self._open and _TEST not in lowered:
            # The last of the body, outside blocks, holds none: nothing to read in it.
            # Most pages come whole, and most have no blocks: this is their only cost
            # (~1 µs for 2 KB, where scanning states to the end takes ~6 µs).
            self._held = b""
            return data
        dropped: list[int] = []  # start, end, start, end...: bytes removed
        if more_body:
            cut = self._scan(data, lowered, dropped)
        else:
            cut = self._finish(data, lowered, dropped)
        if self._drop_from >= 0:  # a removed block goes on in the held bytes
            dropped += (self._drop_from, cut)
            self._drop_from = 0
        self._held = data[cut:]
        self._offset += cut
        self._pos -= cut
        self._tags_from = max(0, self._tags_from - cut)
        if not dropped:
            return data if cut == len(data) else data[:cut]
        pieces, at = [], 0
        for i in range(0, len(dropped), 2):
            pieces.append(data[at : dropped[i]])
            at = dropped[i + 1]
        pieces.append(data[at:cut])
        return b"".join(pieces)

    def _finish(self, data: bytes, lowered: bytes, dropped: list[int]) -> int:
        # What waits for more at the end of the body is no block and ends none:
        # it is sent, or dropped with the removed block it is in.
        self._scan(data, lowered, dropped)
        self._pos = len(data)
        return len(data)

    def _scan(self, data: bytes, lowered: bytes, dropped: list[int]) -> int:
        """Tokenize *data* from the saved state: how much of it may go now.

        *lowered* is *data* lower-cased, made once per chunk. Saves the state and
        where to resume: the end, or the start of what may not be whole yet.
        Removed bytes are added to *dropped*.
        """
        # Outside blocks, only the attribute's name and what hides markup are looked
        # for, not every tag: on the Webflow page of demo_site.webflow_page, without
        # blocks, that runs ~400 MB/s, where even one regex over all tags runs ~220 MB/s
        # and lexbor parses ~150 MB/s (measured). The name is found in any case on a
        # lower-cased copy: bytes.lower() and find() scan ~2 GB/s, a case-blind regex
        # (either kind) ~200 MB/s.
        size = len(data)
        pos, state = self._pos, self._state
        found = lowered.find(_TEST, pos)  # the next attribute name, outside blocks
        while True:
            if state != DATA:
                if state <= RAW_TEXT:
                    after, pos, stalled = leave_text(state, self._end_tag, data, pos)
                    if stalled:
                        break
                    if after == DATA and state != COMMENT and self._open:
                        self._pop_text_element(pos, dropped)  # its end tag read
                    state = after
                elif state == _LONG_TAG:
                    end = data.find(b">", pos)
                    if end < 0:
                        pos = max(pos, size - 1)  # to see a "/" before the ">"
                        break
                    pos = end + 1
                    state = self._long_tag_ended(data[end - 1] == SLASH, pos, dropped)
                elif state == _PLAINTEXT:
                    pos = size
                    break
                else:
                    ending = b">" if state == _BOGUS_COMMENT else b"]]>"
                    end = data.find(ending, pos)
                    if end < 0:
                        pos = max(pos, size - len(ending) + 1)
                        break
                    pos, state = end + len(ending), DATA
                if state == DATA and not self._open:
                    self._tags_from = pos
                continue
            if self._open:
                state, pos, stalled = self._in_block(data, lowered, pos, dropped)
                if not self._open:
                    self._tags_from = pos  # the outermost block has ended
                if stalled:
                    break
                continue
            m = _OPENING.search(data, pos)
            stop = m.start() if m else size
            if 0 <= found < pos:
                found = lowered.find(_TEST, pos)
            if 0 <= found < stop:
                state, pos, stalled = self._at_attribute(data, found, dropped)
            elif m is None:
                pos = max(pos, size - _LONGEST_OPENING)
                break
            else:
                state, pos, stalled = self._at_opening(data, m, found, dropped)
            if stalled:
                break
        self._state = state
        self._pos = pos
        if state != DATA or self._open:
            return pos
        # A tag whose ">" is still to come may hold a block's attributes: read it again.
        lt = self._last_tag_start(data, size)
        if 0 <= lt < pos and _START_TAG.match(data, lt) is None and size - lt <= LONGEST_HELD_TAG:
            self._pos = lt
        return self._pos

    def _last_tag_start(self, data: bytes, end: int) -> int:
        """Where the last "<" and letter since the data state began, before *end*, is (or -1)."""
        lt = data.rfind(b"<", self._tags_from, end)
        while lt >= 0 and not data[lt + 1 : lt + 2].isalpha():
            lt = data.rfind(b"<", self._tags_from, lt)
        return lt

    def _at_attribute(self, data: bytes, found: int, dropped: list[int]) -> tuple[int, int, bool]:
        """Outside blocks, at "data-optibase-test": the block its tag starts, if any.

        Returns the state and the position after, and whether it stalled there.
        """
        past = found + len(_TEST)
        lt = self._last_tag_start(data, found)
        if lt < 0:
            return DATA, past, False  # text
        tag = _START_TAG.match(data, lt)
        if tag is None:
            if len(data) - lt <= LONGEST_HELD_TAG:
                return DATA, lt, True  # the tag's ">" is still to come
            return DATA, past, False  # too long to be a block
        end = tag.end()
        if end <= found:
            return DATA, past, False  # text after that tag
        if end - lt > LONGEST_HELD_TAG:
            return DATA, past, False
        block = _block_of(data, tag.end(1), end)
        if block is None:
            return DATA, end, False
        name = tag.group(1).lower()
        return self._start_tag(lt, end, name, data[end - 2] == SLASH, block, dropped), end, False

    def _at_opening(
        self, data: bytes, m: re.Match[bytes], found: int, dropped: list[int]
    ) -> tuple[int, int, bool]:
        """Outside blocks, at an opening of what hides markup: the state it enters (as above).

        *found* is where the next "data-optibase-test" is: in the opening's start
        tag, it may make the element a block.
        """
        lt, end = m.span()
        kind = data[lt + 1]
        if kind == BANG:
            after = data[lt + 2 : lt + 4]
            if after == b"--":
                state, pos, stalled = open_comment(data, lt)
                return (DATA if stalled else state), pos, stalled
            if len(after) < 2 and b"--".startswith(after):
                return DATA, lt, True  # a comment or not: the next chunk says
            return _BOGUS_COMMENT, lt + 2, False
        if kind == _QUESTION:
            return _BOGUS_COMMENT, lt + 2, False
        if m.lastindex and not lt <= found < end:
            # A whole element, no block: an svg icon's title, a script by URL.
            self._tags_from = end
            return DATA, end, False
        tag = _START_TAG.match(data, lt)
        if tag is None or tag.end() - lt > LONGEST_HELD_TAG:
            if tag is None and len(data) - lt <= LONGEST_HELD_TAG:
                return DATA, lt, True  # the tag's ">" is still to come
            self._long_name = _long_tag_name(data, lt + 1)
            return _LONG_TAG, lt + LONGEST_HELD_TAG, False
        end = tag.end()
        name = tag.group(1).lower()
        block = _block_of(data, tag.end(1), end) if lt <= found < end else None
        if block is None:
            return self._text_state(name), end, False
        return self._start_tag(lt, end, name, data[end - 2] == SLASH, block, dropped), end, False

    def _in_block(
        self, data: bytes, lowered: bytes, pos: int, dropped: list[int]
    ) -> tuple[int, int, bool]:
        """Inside a block, the tokens from *pos*: the state and position after them (as above).

        Goes on as long as the state stays DATA and the block open. Ordinary
        HTML tags are read here, in one loop (a method call per tag made the
        block's bytes cost ~4x the tags' regex, measured); the others below.
        """
        size = len(data)
        opened, roots = self._open, self._roots
        found = lowered.find(_TEST, pos) % (size + 1)  # the next attribute name, or the end
        while opened:
            m = _MARKUP.search(data, pos)
            if m is None:  # text to the end, but for a "<" that may open something
                return DATA, (size - 1 if data.endswith(b"<") else size), True
            lt = m.start()
            slash, name = m.group(1, 2)
            if name is None:
                state, pos, stalled = self._markup_at(data, lt)
            else:
                if found < lt:
                    found = lowered.find(_TEST, lt) % (size + 1)
                end = m.end(3)  # of the tag, if whole
                # Whole, and holding no attribute of a block:
                if found >= end > 0 and end - lt <= LONGEST_HELD_TAG:
                    name = name.lower()
                    top = len(opened) - 1
                    if slash:
                        if opened[top][0] == name and not self._deeper and top not in roots:
                            opened.pop()  # an end tag that closes what it names, no block
                            pos = end
                            continue
                    elif not (
                        name in self._closers
                        or name in _NOT_PLAIN
                        or opened[top][1]
                        or top + 1 >= _DEEPEST
                    ):
                        if name in _VOID:
                            pos = end
                        elif found >= m.end(4) > 0 and m.end(4) - m.start(4) <= LONGEST_HELD_TAG:
                            pos = m.end(4)  # an element holding only text, with its end tag
                        else:
                            opened.append((name, False))  # an HTML element with DATA in it
                            pos = end
                        continue
                state, pos, stalled = self._tag_at(data, lowered, m, dropped)
            if state != DATA or stalled:
                return state, pos, stalled
        return DATA, pos, False

    def _tag_at(
        self, data: bytes, lowered: bytes, m: re.Match[bytes], dropped: list[int]
    ) -> tuple[int, int, bool]:
        """Inside a block, at a tag *m* (of _MARKUP): what it does (as above)."""
        lt, end = m.start(), m.end(3)
        if end < 0 and len(data) - lt <= LONGEST_HELD_TAG:
            return DATA, lt, True  # the tag's ">" is still to come
        whole = 0 < end - lt <= LONGEST_HELD_TAG
        # A long tag's name is read within the bytes held, however the body is cut.
        name = data[m.start(2) : min(m.end(2), lt + LONGEST_HELD_TAG)].lower()
        if m.start(1) < m.end(1):
            return self._end_tag_at(lt, end if whole else -1, name, dropped)
        closed = self._implied_end(name)
        if closed >= 0:
            self._close(closed, lt, dropped)
            if not self._open:
                return DATA, lt, False  # the tag is outside: read again from there
        if not whole:
            self._long_name = name
            return _LONG_TAG, lt + LONGEST_HELD_TAG, False
        block = None
        if self._removed < 0 and len(self._open) < _DEEPEST and lowered.find(_TEST, lt, end) >= 0:
            block = _block_of(data, m.end(2), end)
        return self._start_tag(lt, end, name, data[end - 2] == SLASH, block, dropped), end, False

    def _markup_at(self, data: bytes, lt: int) -> tuple[int, int, bool]:
        """Inside a block, at "<!", "<?" or "</" before no letter: the state it enters."""
        kind = data[lt + 1]
        if kind == BANG:
            after = data[lt + 2 : lt + 9]
            foreign = self._in_foreign_content()
            if after.startswith(b"--"):
                state, pos, stalled = open_comment(data, lt)
                return (DATA if stalled else state), pos, stalled
            if foreign and after.startswith(b"[CDATA["):
                return _CDATA, lt + 9, False
            if (len(after) < 2 and b"--".startswith(after)) or (
                foreign and len(after) < 7 and b"[CDATA[".startswith(after)
            ):
                return DATA, lt, True
        elif kind == SLASH and lt + 2 == len(data):
            return DATA, lt, True
        # A bogus comment, to the next ">" ("</>" is nothing, which comes to the same).
        return _BOGUS_COMMENT, lt + 2, False

    def _end_tag_at(
        self, lt: int, end: int, name: bytes, dropped: list[int]
    ) -> tuple[int, int, bool]:
        """Inside a block, at an end tag ending at *end* (-1: a long one): what it closes."""
        if self._deeper:
            self._deeper -= 1
        else:
            i = self._matching(name)
            if i == -1:  # of what the block is in: the block ends before it
                self._close(0, lt, dropped)
                return DATA, lt, False
            if i >= 0 and i == self._removed and end < 0:
                self._long_close = i  # the removed block ends where this tag does
            elif i >= 0:
                # The removed block's own end tag goes with it; another ends it before.
                self._close(i, end if i == self._removed else lt, dropped)
        if end < 0:
            return _LONG_TAG, lt + LONGEST_HELD_TAG, False
        return DATA, end, False

    def _long_tag_ended(self, self_closing: bool, end: int, dropped: list[int]) -> int:
        """A tag longer than the longest held has ended at *end*: the state after it."""
        name, self._long_name = self._long_name, b""
        close, self._long_close = self._long_close, -1
        if close >= 0:
            self._close(close, end, dropped)
        if not name:
            return DATA
        if self._open:
            return self._push(name, self_closing)
        return self._text_state(name)

    def _start_tag(
        self,
        lt: int,
        end: int,
        name: bytes,
        self_closing: bool,
        block: tuple[str, str] | None,
        dropped: list[int],
    ) -> int:
        """A start tag read whole, maybe a block's: the state after it."""
        depth = len(self._open)
        # A block's self-closed tag is the block, whatever its namespace, since that is
        # guessed outside blocks: taken for an HTML element left open, an svg <path/>
        # would take the rest of the svg with it. Removing less is safe where unsure.
        state = DATA if block is not None and self_closing else self._push(name, self_closing)
        opened = len(self._open) > depth
        if block is not None:
            if opened:
                self._roots.append(depth)
                self._closers |= _IMPLIED_END.get(name, _NO_RULE)[0]
            if not self._keeps(*block, lt):
                if opened:
                    self._removed, self._drop_from = depth, lt
                else:
                    dropped += (lt, end)  # a void element: the tag alone
        return state

    def _push(self, name: bytes, self_closing: bool) -> int:
        """Opens the element *name* inside a block, unless it has no content: the state after."""
        foreign = self._in_foreign_content() or name in _FOREIGN_ROOTS
        if self_closing if foreign else name in _VOID:
            return DATA
        if len(self._open) < _DEEPEST:
            self._open.append((name, foreign))
        else:
            self._deeper += 1
        return DATA if foreign else self._text_state(name)

    def _text_state(self, name: bytes) -> int:
        """The state after the start tag of the HTML element *name*."""
        if name == b"script":
            return SCRIPT
        if name == b"plaintext":
            return _PLAINTEXT
        end_tag = TEXT_END.get(name)
        if end_tag is None:
            return DATA
        self._end_tag = end_tag
        return RAW_TEXT

    def _in_foreign_content(self) -> bool:
        if not self._open:
            return False
        name, foreign = self._open[-1]
        return foreign and name not in _INTEGRATION_POINTS

    def _pop_text_element(self, end: int, dropped: list[int]) -> None:
        """A script's or raw-text element's end tag, ending at *end*, closed it."""
        if self._deeper:
            self._deeper -= 1
        else:
            self._close(len(self._open) - 1, end, dropped)

    def _implied_end(self, name: bytes) -> int:
        """Where the outermost block a start tag *name* closes by implication is open (or -1)."""
        if name not in self._closers or self._deeper:
            return -1
        top = len(self._open) - 1
        for root in self._roots:
            rule = _IMPLIED_END.get(self._open[root][0])
            if rule is None or name not in rule[0]:
                continue
            scope = rule[1]
            if scope is None:
                if root == top:
                    return root
            elif not any(open_name in scope for open_name, _ in self._open[root + 1 :]):
                return root
        return -1

    def _matching(self, name: bytes) -> int:
        """Where the element an end tag *name* closes is open; -1: none, -2: ignored."""
        for i in range(len(self._open) - 1, -1, -1):
            open_name = self._open[i][0]
            if open_name == name:
                return i
            if open_name == b"template":
                return -2
        return -1

    def _close(self, i: int, at: int, dropped: list[int]) -> None:
        """Closes the elements open from *i* up; a removed block among them ends at *at*."""
        if i <= self._removed:
            dropped += (self._drop_from, at)
            self._removed = self._drop_from = -1
        del self._open[i:]
        self._deeper = 0
        if self._roots and self._roots[-1] >= i:
            while self._roots and self._roots[-1] >= i:
                self._roots.pop()
            self._closers = frozenset().union(
                *(_IMPLIED_END.get(self._open[root][0], _NO_RULE)[0] for root in self._roots)
            )

    def _keeps(self, test: str, variant: str, lt: int) -> bool:
        """Whether the block of *test* and *variant* at *lt* stays; choosing, once per test."""
        kept = self._chosen.get(test)
        if kept is None:
            try:
                kept = self._choose(test)
            except Exception:
                logger.exception("choosing a variant of test %r failed: the first one stays", test)
                kept = None
            if kept is None:
                kept = variant
            self._chosen[test] = kept
        self.blocks.append(Block(test, variant, kept == variant, self._offset + lt))
        return kept == variant


def _long_tag_name(data: bytes, at: int) -> bytes:
    """The lower-cased name of a tag from *at*, read within the longest held."""
    end = _TAG_NAME_END.search(data, at, at + LONGEST_HELD_TAG)
    return data[at : end.start() if end else at + LONGEST_HELD_TAG].lower()


def _block_of(data: bytes, name_end: int, end: int) -> tuple[str, str] | None:
    """The test and variant of the start tag read whole to *end*, if it is a block's."""
    values: dict[bytes, bytes] = {}
    for attribute in _ATTRIBUTE.finditer(data, name_end, end - 1):
        values.setdefault(attribute.group(1).lower(), attribute.group(2) or b"")
    test = _value(values.get(_TEST, b""))
    variant = _value(values.get(_VARIANT, b""))
    if test and variant:
        return test, variant
    return None


def _value(raw: bytes) -> str:
    if raw[:1] in (b'"', b"'"):
        raw = raw[1:-1]
    return html.unescape(raw.decode("utf-8", "replace"))

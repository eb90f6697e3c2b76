"""What the streaming HTML scanners share: tag regexes, and the states that hide markup.

:mod:`._injection` and :mod:`._blocks` follow the HTML tokenizer (WHATWG HTML,
"Tokenization") on bytes, jumping from one "opening" to the next with
precompiled regexes. Here are the parts they both need: how a tag goes on after
its name, and the text states in which no tag exists -- comments, the text of
``<script>`` (its escaped states included) and of the raw-text and RCDATA
elements -- with one step through each (:func:`leave_text`).
"""

from __future__ import annotations

import re

NAME_END = rb"(?=[\t\n\f\r />])"  # what ends a tag name (CR: the tokenizer reads it as LF)
# The rest of a tag after its name, through its ">", which a quoted attribute value
# may contain (a quote opens a value only right after "="). Where it does not
# match, the tag goes on in the next chunk. Two parse errors are read otherwise
# than by the tokenizer, for speed (a regex per attribute reads a tag ~30% slower,
# measured): an "=" that starts an attribute's name, and one inside an unquoted
# value, are taken to start a value.
TAG_REST = rb"""[^>=]*+(?:=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|(?=[^"']))[^>=]*+)*+>"""
LT, GT, BANG, SLASH = b"<>!/"  # as indexing bytes gives them

# The tokenizer's states that the scanners follow.
DATA, COMMENT, SCRIPT, ESCAPED, DOUBLE_ESCAPED, RAW_TEXT = range(6)

# Elements whose text runs to their own end tag: raw text (noscript: as in a browser
# that runs scripts), and title and textarea (RCDATA).
TEXT_ELEMENTS = (
    b"style",
    b"title",
    b"textarea",
    b"noscript",
    b"iframe",
    b"xmp",
    b"noembed",
    b"noframes",
)
# A tag the scanners must read whole is held, with what follows it, up to this size.
LONGEST_HELD_TAG = 4096


def case_blind(name: bytes) -> bytes:
    """A regex for *name* in any ASCII case, in classes ([sS][cC]...)."""
    return b"".join(
        b"[%c%c]" % (c, c - 32) if 97 <= c <= 122 else re.escape(bytes([c])) for c in name
    )


def one_of(alternatives: dict[bytes, bytes]) -> bytes:
    """A regex for any of the names, in any case, each followed by its own pattern.

    Grouped by first letter, in classes ([sS][cC]...) rather than with re.IGNORECASE,
    behind a lookahead for the first two letters: most of a page's "<" open none of
    the names, and the regex engine rejects them after that one test.
    """
    by_first: dict[bytes, list[bytes]] = {}
    for name, then in alternatives.items():
        by_first.setdefault(name[:1], []).append(case_blind(name[1:]) + then)
    firsts, seconds = (
        b"".join(sorted({case_blind(name[i : i + 1]).strip(b"[]") for name in alternatives}))
        for i in (0, 1)
    )
    groups = (
        case_blind(first) + b"(?:" + b"|".join(rests) + b")" for first, rests in by_first.items()
    )
    return b"(?=[" + firsts + b"][" + seconds + b"])(?:" + b"|".join(groups) + b")"


def end_tag(name: bytes) -> bytes:
    """A regex for the end tag of *name*; where its ">" is still to come, for what came of it."""
    return b"</" + case_blind(name) + NAME_END + b"(?:" + TAG_REST + b")?"


def whole_element(name: bytes) -> bytes:
    """A regex for what follows "<" and *name* in a start tag of the element, through its ">".

    When the element's text is short and holds no "<", the text and the end tag
    too: a title, or a script loaded by URL, in one match. (The group marks it:
    a match with lastindex set is a whole element.) Where the ">" is still to
    come, the match ends with the name.
    """
    end = b"</" + case_blind(name) + NAME_END + TAG_REST
    return NAME_END + b"(?:" + TAG_REST + b"(?:[^<]{0,512}+(" + end + b"))?)?"


TEXT_END = {name: re.compile(end_tag(name)) for name in TEXT_ELEMENTS}
"""What ends the text of each element of :data:`TEXT_ELEMENTS`."""
COMMENT_END = re.compile(rb"--!?>")
SCRIPT_END = re.compile(b"<!--|" + end_tag(b"script"))
ESCAPED_EVENT = re.compile(b"-->|<" + case_blind(b"script") + NAME_END + b"|" + end_tag(b"script"))
DOUBLE_ESCAPED_END = re.compile(b"-->|</" + case_blind(b"script") + NAME_END)
SCRIPT_HOLD = len(b"</script")
TEXT_HOLD = len(b"</noscript")  # the longest end tag of TEXT_ELEMENTS, before its name ends


def search_from_lt(pattern: re.Pattern[bytes], data: bytes, pos: int) -> re.Match[bytes] | None:
    """``pattern.search(data, pos)`` for a *pattern* that starts with "<", in raw text.

    memchr finds the next "<" many times faster than the regex engine scans, and in a
    style sheet or most scripts that "<" opens the end tag.
    """
    at = data.find(b"<", pos)
    if at < 0:
        return None
    return pattern.match(data, at) or pattern.search(data, at + 1)


def open_comment(data: bytes, start: int) -> tuple[int, int, bool]:
    """At a "<!--" at *start*: the state and position after it, and whether it stalled.

    "<!-->" and "<!--->" are whole comments (back to DATA past them); any other
    opens one (COMMENT after the "<!--"). Stalled when which of those it is
    comes in the next chunk: the scan resumes from *start* then.
    """
    pos = start + 4
    if data.startswith(b">", pos) or data.startswith(b"->", pos):
        return DATA, data.index(b">", pos) + 1, False
    if len(data) - pos < 2:
        return COMMENT, start, True
    return COMMENT, pos, False


def leave_text(
    state: int, end_tag: re.Pattern[bytes], data: bytes, pos: int
) -> tuple[int, int, bool]:
    """One step through the text state *state* from *pos*: the state and position after it.

    The step ends where the state changes: back to DATA past the end tag of the
    element (the comment's end), or into or out of a script's escaped states.
    *end_tag* ends RAW_TEXT. Stalled (the third value) when nothing changes the
    state in *data*: the scan resumes in the same state from the position
    returned, which holds back what may be the start of the change.
    """
    size = len(data)
    if state == SCRIPT:
        m = search_from_lt(SCRIPT_END, data, pos)
        if m is None:
            return state, max(pos, size - SCRIPT_HOLD), True
        start, end = m.span()
        if data[start + 1] == BANG:
            # From its dashes: "<!-->" leaves the escape as soon as it enters.
            return ESCAPED, end - 2, False
        if data[end - 1] != GT:
            return state, start, True  # the end tag's ">" is still to come
        return DATA, end, False
    if state == RAW_TEXT:
        m = search_from_lt(end_tag, data, pos)
        if m is None:
            return state, max(pos, size - TEXT_HOLD), True
        start, end = m.span()
        if data[end - 1] != GT:
            return state, start, True
        return DATA, end, False
    if state == COMMENT:
        m = COMMENT_END.search(data, pos)
        if m is None:
            return state, max(pos, size - 3), True
        return DATA, m.end(), False
    if state == ESCAPED:  # after "<!--" in a script: "<script" escapes it further
        m = ESCAPED_EVENT.search(data, pos)
        if m is None:
            return state, max(pos, size - SCRIPT_HOLD), True
        start, end = m.span()
        if data[start] != LT:
            return SCRIPT, end, False
        if data[start + 1] != SLASH:
            return DOUBLE_ESCAPED, end, False
        if data[end - 1] != GT:
            return state, start, True
        return DATA, end, False
    # DOUBLE_ESCAPED: "</script" here only ends that
    m = DOUBLE_ESCAPED_END.search(data, pos)
    if m is None:
        return state, max(pos, size - SCRIPT_HOLD), True
    start, end = m.span()
    return (SCRIPT if data[start] != LT else ESCAPED), end, False

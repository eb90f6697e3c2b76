"""Which requests are a person viewing a page: bots and prefetches are not (pure).

What counts as a bot, by default: a User-Agent matched by a pattern of
crawler-user-agents (the monperrus list, released monthly on PyPI), but the
few in :data:`_NOT_BOTS`, or by our own :data:`_EXTRAS`. The ``screen_bots``
setting turns this off or replaces it (:func:`bot_check`). When in doubt, a
person: one wrongly taken for a bot is lost from the results, while a rare bot
taken for a person is noise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from typing import Literal, TypeAlias

from crawleruseragents import CRAWLER_USER_AGENTS_DATA

from ._settings import BotScreen

# "outside": another host or no consent; "preview": a tester forcing variants;
# "stranger": no valid cookie where no visitor may be made (a beacon).
Audience = Literal["visitor", "bot", "prefetch", "preview", "outside", "stranger"]
BotCheck: TypeAlias = Callable[[bytes], bool]  # the raw User-Agent (b"" when absent) -> a bot?

logger = logging.getLogger("optibase_edge")

# Patterns of the list that match people. "MetaIAB Facebook" ends the User-Agent of
# Facebook's in-app browser since late 2025: a person who tapped a link in the app.
# The list files it as a link previewer; the app's prefetches of a link in the feed
# say so in X-Purpose / Sec-Purpose, and audience() tells them apart by that.
_NOT_BOTS = frozenset({"MetaIAB Facebook"})

# Ours, beside the list, matched against the lower-cased User-Agent: a self-declared
# bot, crawler or spider of any name, including those the list has not caught up with
# ("cubot" is a phone maker, not a bot); headless browsers and page auditors, whatever
# a later release of the list says; previewers and monitors the list lacks.
_EXTRAS = re.compile(
    r"(?<!cu)bot(?:[\s/;:,)_-]|$)|crawl|spider|"
    r"headlesschrome|phantomjs|lighthouse|pagespeed|"
    r"quora link preview|newrelicpinger"
)

# Only the first 512 characters are screened (and kept as the cache's key). Real
# browsers send less (in-app browsers send the longest, about 400), and the cost of a
# cache miss grows with the length: this bounds what one odd header can cost, in time
# and in the cache's memory.
_SCREENED_LENGTH = 512

_PREFETCH_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")

# Punctuation escaped with a backslash stands for itself ("Googlebot\/" is plain text).
_ESCAPED_PUNCTUATION = re.compile(r"\\([^0-9A-Za-z])")
_SPECIAL = re.compile(r"[.^$*+?{}\[\]()|\\]")

_Trie: TypeAlias = dict[str, "_Trie"]


def audience(headers: Mapping[bytes, bytes], is_bot: BotCheck | None) -> Audience:
    """Who is asking, from the request's headers (lower-case names, as in ASGI).

    A prefetch or preview header wins whatever the User-Agent; then *is_bot*, if
    given, decides from the User-Agent.
    """
    for name in _PREFETCH_HEADERS:
        value = headers.get(name)
        if value is not None and (b"prefetch" in value.lower() or b"preview" in value.lower()):
            return "prefetch"
    if is_bot is not None and is_bot(headers.get(b"user-agent", b"")):
        return "bot"
    return "visitor"


def bot_check(screen_bots: bool | BotScreen) -> BotCheck | None:
    """The User-Agent check the ``screen_bots`` setting asks for.

    True: :func:`is_listed_bot`, its list compiled now, at start-up, rather than
    on the first request. False: None, no screening by User-Agent. A callable
    ``(user_agent: str) -> bool``: it alone decides, given the header decoded as
    Latin-1 ("" when absent), on every request that needs screening (it is not
    cached). If it raises, the request counts as a person's (when in doubt, a
    person; and a page never breaks over it), and the first failure is logged.
    """
    if screen_bots is True:
        _listed()
        return is_listed_bot
    if screen_bots is False:
        return None
    return _never_raising(screen_bots)


def is_listed_bot(user_agent: bytes) -> bool:
    """Whether *user_agent* is a bot by the default list (see the module's docstring)."""
    # A slice as long as the bytes is the same object: no copy for a normal User-Agent.
    return _is_listed(user_agent[:_SCREENED_LENGTH])


@lru_cache(maxsize=4096)  # a site sees the same few hundred User-Agents over and over
def _is_listed(user_agent: bytes) -> bool:
    text = user_agent.decode("latin-1")
    # The list's patterns are case-sensitive, as its authors wrote them; only ours are not.
    return any(regex.search(text) for regex in _listed()) or bool(_EXTRAS.search(text.lower()))


@cache
def _listed() -> tuple[re.Pattern[str], ...]:
    """The list's patterns, compiled once (some 35 ms, which :func:`bot_check` pays)."""
    patterns = (entry["pattern"] for entry in CRAWLER_USER_AGENTS_DATA)
    return compile_patterns(p for p in patterns if p not in _NOT_BOTS)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Regexes that between them match wherever any of *patterns* does (``search``).

    Python's ``re`` tries the alternatives of a pattern one after the other at
    every position of the text, so the list's 1,500 patterns joined by ``|``
    cost about 0.5 ms for a person's User-Agent. Plain-text patterns (all but a
    few dozen) go into one trie instead, which branches once per shared prefix
    (about 10 µs); the others are compiled one by one, where each gets ``re``'s
    fast scan for its own first characters (together about 20 µs).
    """
    texts: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for pattern in patterns:
        text = plain_text(pattern)
        if text is None:
            regexes.append(re.compile(pattern))
        else:
            texts.append(text)
    if texts:
        regexes.insert(0, re.compile(_trie_source(texts)))
    return tuple(regexes)


def plain_text(pattern: str) -> str | None:
    """The text *pattern* matches when it has no special characters, else None."""
    if _SPECIAL.search(_ESCAPED_PUNCTUATION.sub("", pattern)):
        return None
    return _ESCAPED_PUNCTUATION.sub(r"\1", pattern)


def _trie_source(texts: Iterable[str]) -> str:
    """A regex matching where any of *texts* occurs."""
    root: _Trie = {}
    for text in texts:
        node = root
        for char in text:
            node = node.setdefault(char, {})
        node[""] = {}  # a text ends here
    return _branches(root)


def _branches(node: _Trie) -> str:
    if "" in node:
        return ""  # a text ends here: it matches wherever the longer ones below it would
    options = [re.escape(char) + _branches(child) for char, child in node.items()]
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"


def _never_raising(screen: BotScreen) -> BotCheck:
    failed = False

    def check(user_agent: bytes) -> bool:
        nonlocal failed
        try:
            return bool(screen(user_agent.decode("latin-1")))
        except Exception:
            if not failed:
                failed = True
                logger.exception(
                    "optibase: the screen_bots callable raised; such requests count as people's "
                    "(logged once)"
                )
            return False

    return check

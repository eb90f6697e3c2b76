"""Which requests are a person viewing a page: bots and prefetches are not (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

# "outside": another host or no consent; "preview": a tester forcing variants.
Audience = Literal["visitor", "bot", "prefetch", "preview", "outside"]

# Self-declared crawlers, link previewers and headless browsers. Deliberately
# conservative: a person wrongly taken for a bot is lost from the results, while
# a rare bot taken for a person is noise. Matched against the lower-cased
# User-Agent ("cubot" is a phone maker, not a bot).
_BOT = re.compile(
    r"(?<!cu)bot(?:[\s/;:,)_-]|$)|crawl|spider|slurp|mediapartners|"
    r"facebookexternalhit|facebookcatalog|embedly|quora link preview|whatsapp|"
    r"headlesschrome|phantomjs|lighthouse|pagespeed|pingdom|"
    r"statuscake|site24x7|newrelicpinger|datadog synthetics"
)
_PREFETCH_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")


def audience(headers: Mapping[bytes, bytes]) -> Audience:
    """Who is asking, from the request's headers (lower-case names, as in ASGI)."""
    for name in _PREFETCH_HEADERS:
        value = headers.get(name)
        if value is not None and (b"prefetch" in value.lower() or b"preview" in value.lower()):
            return "prefetch"
    user_agent = headers.get(b"user-agent")
    if user_agent is not None and is_bot(user_agent):
        return "bot"
    return "visitor"


@lru_cache(maxsize=4096)  # a site sees the same few hundred User-Agents over and over
def is_bot(user_agent: bytes) -> bool:
    return _BOT.search(user_agent.decode("latin-1").lower()) is not None

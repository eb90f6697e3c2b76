"""Which requests are a person viewing a page: bots and prefetches are not (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

Audience = Literal["visitor", "bot", "prefetch"]

# Self-declared crawlers, link previewers and headless browsers. Deliberately
# conservative: a person wrongly taken for a bot is lost from the results, while
# a rare bot taken for a person is noise.
_BOT = re.compile(
    r"(?<!cu)bot(?:[\s/;:,)_-]|$)|crawl|spider|slurp|mediapartners|adsbot|"
    r"facebookexternalhit|facebookcatalog|embedly|quora link preview|whatsapp|"
    r"headlesschrome|phantomjs|lighthouse|pagespeed|pingdom|uptimerobot|"
    r"statuscake|site24x7|newrelicpinger|datadog synthetics",
    re.IGNORECASE,
)
_PREFETCH_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")


def audience(headers: Mapping[bytes, bytes]) -> Audience:
    """Who is asking, from the request's headers (lower-case names, as in ASGI)."""
    for name in _PREFETCH_HEADERS:
        value = headers.get(name)
        if value is not None and (b"prefetch" in value.lower() or b"preview" in value.lower()):
            return "prefetch"
    user_agent = headers.get(b"user-agent")
    if user_agent is not None and _BOT.search(user_agent.decode("latin-1")):
        return "bot"
    return "visitor"

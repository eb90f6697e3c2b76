"""Telling people from bots and prefetches, from request headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optibase_edge._screening import audience

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    "user_agent",
    [
        CHROME,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile",
        "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 Mobile Safari",
        "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "testclient",
        "",
    ],
)
def test_people(user_agent: str) -> None:
    assert audience({b"user-agent": user_agent.encode()}) == "visitor"


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; YandexBot/3.0)",
        "Twitterbot/1.0",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0 Safari",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (Linux; Android 11) Chrome-Lighthouse",
        "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "WhatsApp/2.23.20.0",
    ],
)
def test_bots(user_agent: str) -> None:
    assert audience({b"user-agent": user_agent.encode()}) == "bot"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"sec-purpose", b"prefetch"),
        (b"sec-purpose", b"prefetch;prerender"),
        (b"purpose", b"prefetch"),
        (b"x-moz", b"prefetch"),
        (b"x-purpose", b"preview"),
    ],
)
def test_prefetches(name: bytes, value: bytes) -> None:
    assert audience({name: value, b"user-agent": CHROME.encode()}) == "prefetch"


@given(st.dictionaries(st.binary(max_size=20), st.binary(max_size=200), max_size=8))
def test_any_headers_get_an_answer(headers: dict[bytes, bytes]) -> None:
    assert audience(headers) in ("visitor", "bot", "prefetch")

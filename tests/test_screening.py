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


SCREENING_HEADERS = [b"user-agent", b"sec-purpose", b"purpose", b"x-purpose", b"x-moz"]


def any_case(word: str) -> st.SearchStrategy[bytes]:
    return st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word)).map(
        lambda chars: "".join(chars).encode()
    )


@given(
    name=st.sampled_from([b"sec-purpose", b"purpose", b"x-purpose", b"x-moz"]),
    word=any_case("prefetch") | any_case("preview"),
    before=st.binary(max_size=20),
    after=st.binary(max_size=20),
    user_agent=st.binary(max_size=200),
)
def test_a_prefetch_or_preview_purpose_wins_in_any_case_and_with_any_user_agent(
    name: bytes, word: bytes, before: bytes, after: bytes, user_agent: bytes
) -> None:
    headers = {name: before + word + after, b"user-agent": user_agent}
    assert audience(headers) == "prefetch"


@given(
    known=st.sampled_from(
        [
            ({}, "visitor"),
            ({b"user-agent": CHROME.encode()}, "visitor"),
            ({b"user-agent": b"Mozilla/5.0 (compatible; Googlebot/2.1)"}, "bot"),
            ({b"sec-purpose": b"prefetch", b"user-agent": CHROME.encode()}, "prefetch"),
        ]
    ),
    others=st.dictionaries(
        st.sampled_from([b"referer", b"from", b"x-requested-with"])
        | st.binary(max_size=20).filter(lambda name: name not in SCREENING_HEADERS),
        # What would count in a screening header must not count anywhere else.
        st.sampled_from([b"Googlebot/2.1", b"HeadlessChrome", b"prefetch", b"preview"])
        | st.binary(max_size=200),
        max_size=8,
    ),
)
def test_only_the_screening_headers_count(
    known: tuple[dict[bytes, bytes], str], others: dict[bytes, bytes]
) -> None:
    headers, expected = known
    assert audience({**others, **headers}) == expected

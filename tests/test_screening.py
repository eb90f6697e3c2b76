"""Telling people from bots and prefetches, from request headers.

By default a bot is what crawler-user-agents lists (but the patterns that
match people) or what our own patterns catch; ``screen_bots`` turns User-Agent
screening off or hands it to a callable.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from crawleruseragents import CRAWLER_USER_AGENTS_DATA
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import (
    Batch,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._screening import (
    _EXTRAS,
    _NOT_BOTS,
    BotCheck,
    audience,
    bot_check,
    compile_patterns,
    is_listed_bot,
    plain_text,
)
from optibase_edge._settings import BotScreen
from tests.support.server import serve
from tests.support.user_agents import BROWSERS, DESKTOP_USER_AGENT

CHROME = BROWSERS["Chrome Windows"]
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
LIST_PATTERNS = [entry["pattern"] for entry in CRAWLER_USER_AGENTS_DATA]
LIST_EXAMPLES = [
    (entry["pattern"], user_agent)
    for entry in CRAWLER_USER_AGENTS_DATA
    for user_agent in entry["instances"]
]


def by_default(user_agent: str) -> str:
    return audience({b"user-agent": user_agent.encode("latin-1")}, is_listed_bot)


# -- the default list ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BROWSERS)
def test_real_browsers_are_people(name: str) -> None:
    assert by_default(BROWSERS[name]) == "visitor"


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile",
        "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 Mobile Safari",
        "testclient",  # Starlette's TestClient, which most tests here use
        "",
    ],
)
def test_people(user_agent: str) -> None:
    assert by_default(user_agent) == "visitor"


def test_no_user_agent_is_a_person() -> None:
    assert audience({}, is_listed_bot) == "visitor"


def test_every_example_on_the_list_is_a_bot_but_those_left_out() -> None:
    missed = [
        (pattern, user_agent)
        for pattern, user_agent in LIST_EXAMPLES
        if pattern not in _NOT_BOTS and by_default(user_agent) != "bot"
    ]
    assert missed == []


def test_every_pattern_left_out_is_on_the_list() -> None:
    # Else the list has dropped it, and so should _NOT_BOTS.
    assert set(LIST_PATTERNS) >= _NOT_BOTS


@pytest.mark.parametrize(
    "user_agent",
    [
        GOOGLEBOT,
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; YandexBot/3.0)",
        "Twitterbot/1.0",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "WhatsApp/2.23.20.0",
        "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        # Found by our own patterns only.
        "Quora Link Preview/1.0 (http://www.quora.com)",
        "NewRelicPinger/1.0 (1234567)",
        "Mozilla/5.0 (compatible; AcmeBot/0.1)",
        "acme-crawler/2.0",
    ],
)
def test_bots(user_agent: str) -> None:
    assert by_default(user_agent) == "bot"


HEADLESS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/156.0.0.0 Safari/537.36",  # Playwright's and Puppeteer's Chromium
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
    "PhantomJS/2.1.1 Safari/538.1",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/138.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/132.0.0.0 Safari/537.36 Google-PageSpeed",
]


@pytest.mark.parametrize("user_agent", HEADLESS)
def test_headless_browsers_are_bots_whatever_the_list_says(user_agent: str) -> None:
    assert by_default(user_agent) == "bot"
    assert _EXTRAS.search(user_agent.lower())  # ours: a later list cannot drop them


@pytest.mark.parametrize(
    "user_agent",
    [
        "python-httpx2/2.16.2",  # the test suite's own client, unless told otherwise
        "python-requests/2.32.3",
        "curl/8.5.0",
        "Wget/1.21.4",
        "Go-http-client/2.0",
        "okhttp/4.12.0",
        "axios/1.7.2",
    ],
)
def test_scripts_are_bots(user_agent: str) -> None:
    assert by_default(user_agent) == "bot"


def test_only_the_first_512_characters_are_screened() -> None:
    assert by_default("Mozilla/5.0 (" + "x" * 480 + " Googlebot/2.1") == "bot"
    assert by_default("Mozilla/5.0 (" + "x" * 499 + " Googlebot/2.1") == "visitor"


# -- compiling the list --------------------------------------------------------------------

COMPILED = compile_patterns(LIST_PATTERNS)
ONE_BY_ONE = [re.compile(pattern) for pattern in LIST_PATTERNS]
SAMPLES = [user_agent for _, user_agent in LIST_EXAMPLES] + list(BROWSERS.values())


@st.composite
def pieces_of_user_agents(draw: st.DrawFn) -> str:
    """Slices of real User-Agents, bots' and people's, and a little noise, joined."""
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        sample = draw(st.sampled_from(SAMPLES))
        start = draw(st.integers(0, len(sample)))
        end = draw(st.integers(start, len(sample)))
        pieces.append(sample[start:end] + draw(st.text(max_size=3)))
    return "".join(pieces)


@given(text=pieces_of_user_agents())
def test_the_compiled_list_matches_where_its_patterns_do(text: str) -> None:
    compiled = any(regex.search(text) for regex in COMPILED)
    assert compiled == any(regex.search(text) for regex in ONE_BY_ONE)


ALPHABET = "ab/.(|\\ "


@given(
    words=st.lists(st.text(ALPHABET, min_size=1, max_size=4), min_size=1, max_size=8),
    text=st.text(ALPHABET, max_size=16),
)
def test_plain_text_patterns_share_one_regex_matching_where_a_text_occurs(
    words: list[str], text: str
) -> None:
    (regex,) = compile_patterns(re.escape(word) for word in words)
    assert bool(regex.search(text)) == any(word in text for word in words)


def test_a_text_that_begins_with_another_adds_nothing_to_the_trie() -> None:
    (regex,) = compile_patterns(["Googlebot-Image", "Googlebot", "Googlebot-News"])
    assert regex.pattern == "Googlebot"


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("Googlebot\\/", "Googlebot/"),
        ("Snap URL Preview Service", "Snap URL Preview Service"),
        ("Chrome-Lighthouse", "Chrome-Lighthouse"),
        ("a\\\\d", "a\\d"),  # an escaped backslash, then "d"
        ("^curl", None),
        ("[wW]get", None),
        ("Automaton|Newsify Feed Fetcher", None),
        ("BlogTraffic\\/\\d\\.\\d+ Feed-Fetcher", None),
        ("SSL Labs$", None),
        ("a.b", None),
    ],
)
def test_plain_text(pattern: str, text: str | None) -> None:
    assert plain_text(pattern) == text


# -- prefetches ----------------------------------------------------------------------------


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
    assert audience({name: value, b"user-agent": CHROME.encode()}, is_listed_bot) == "prefetch"


SCREENING_HEADERS = [b"user-agent", b"sec-purpose", b"purpose", b"x-purpose", b"x-moz"]
CHECKS: list[BotCheck | None] = [is_listed_bot, None, lambda user_agent: True]


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
    is_bot=st.sampled_from(CHECKS),
)
def test_a_prefetch_or_preview_purpose_wins_in_any_case_with_any_user_agent_and_screening(
    name: bytes,
    word: bytes,
    before: bytes,
    after: bytes,
    user_agent: bytes,
    is_bot: BotCheck | None,
) -> None:
    headers = {name: before + word + after, b"user-agent": user_agent}
    assert audience(headers, is_bot) == "prefetch"


@given(
    known=st.sampled_from(
        [
            ({}, "visitor"),
            ({b"user-agent": CHROME.encode()}, "visitor"),
            ({b"user-agent": GOOGLEBOT.encode()}, "bot"),
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
    assert audience({**others, **headers}, is_listed_bot) == expected


# -- screen_bots ---------------------------------------------------------------------------


def test_screen_bots_true_is_the_list_and_false_is_no_screening() -> None:
    assert bot_check(True) is is_listed_bot
    assert bot_check(False) is None
    assert audience({b"user-agent": GOOGLEBOT.encode()}, None) == "visitor"


@given(
    user_agent=st.text(st.characters(max_codepoint=255), max_size=100),
    verdict=st.booleans(),
)
def test_a_callable_alone_decides_from_the_decoded_user_agent(
    user_agent: str, verdict: bool
) -> None:
    seen: list[str] = []

    def screen(given: str) -> bool:
        seen.append(given)
        return verdict

    check = bot_check(screen)
    assert check is not None
    headers = {b"user-agent": user_agent.encode("latin-1")}
    assert audience(headers, check) == ("bot" if verdict else "visitor")
    assert seen == [user_agent]


def test_a_callable_is_given_an_empty_user_agent_when_there_is_none() -> None:
    seen: list[str] = []

    def screen(user_agent: str) -> bool:
        seen.append(user_agent)
        return True

    check = bot_check(screen)
    assert check is not None
    assert audience({}, check) == "bot"
    assert seen == [""]


def test_a_callable_that_raises_counts_people_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def screen(user_agent: str) -> bool:
        raise RuntimeError(f"cannot screen {user_agent}")

    check = bot_check(screen)
    assert check is not None
    with caplog.at_level(logging.ERROR, logger="optibase_edge"):
        verdicts = [audience({b"user-agent": ua}, check) for ua in (b"a", b"b", b"Googlebot")]
    assert verdicts == ["visitor"] * 3
    (record,) = caplog.records
    assert "screen_bots" in record.getMessage() and record.exc_info is not None


# -- through the middleware ----------------------------------------------------------------


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"hero": get_visitor(request).variant("hero")})


def make_site(
    sent: list[dict[str, Any]], screen_bots: bool | BotScreen = True
) -> tuple[Starlette, Optibase]:
    """A site with one test on "/", whose Segment calls go to *sent*."""

    def handler(batch: Batch) -> Outcome:
        sent.extend(batch.decoded())
        return Outcome(200)

    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("control"), Variant("bold")], pages=["/"])],
        secret_keys=["k" * 32],
        transport=MockTransport(handler),
        screen_bots=screen_bots,
    )
    app = Starlette(
        routes=[Route("/", home)], middleware=[Middleware(OptibaseMiddleware, optibase=ob)]
    )
    return app, ob


def first_visit(
    headers: dict[str, str], screen_bots: bool | BotScreen = True
) -> tuple[str | None, list[str]]:
    """The variant one first visit is shown, and the Segment calls it sends."""
    sent: list[dict[str, Any]] = []
    app, ob = make_site(sent, screen_bots)
    with TestClient(app) as client:
        response = client.get("/", headers=headers)
        assert response.status_code == 200
        assert client.portal is not None and client.portal.call(ob.flush, 5.0)
    hero: str | None = response.json()["hero"]
    return hero, [message.get("event", message["type"]) for message in sent]


PERSON = ["identify", "Experiment Viewed"]


def test_by_default_a_person_is_in_the_test_and_recorded() -> None:
    hero, calls = first_visit({"user-agent": CHROME})
    assert hero in ("control", "bold") and calls == PERSON


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, HEADLESS[0], "python-httpx2/2.16.2"])
def test_by_default_bots_headless_browsers_and_scripts_are_outside_and_unrecorded(
    user_agent: str,
) -> None:
    assert first_visit({"user-agent": user_agent}) == (None, [])


def test_screen_bots_false_counts_a_bot_but_not_a_prefetch() -> None:
    hero, calls = first_visit({"user-agent": GOOGLEBOT}, screen_bots=False)
    assert hero in ("control", "bold") and calls == PERSON
    hero, calls = first_visit({"user-agent": CHROME, "sec-purpose": "prefetch"}, False)
    assert hero in ("control", "bold") and calls == []


def test_a_callable_replaces_the_list() -> None:
    def screen(user_agent: str) -> bool:
        return user_agent.startswith("AcmeMonitor/")

    assert first_visit({"user-agent": "AcmeMonitor/1.0"}, screen) == (None, [])
    hero, calls = first_visit({"user-agent": GOOGLEBOT}, screen)
    assert hero in ("control", "bold") and calls == PERSON


def test_a_callable_that_raises_never_breaks_the_page(caplog: pytest.LogCaptureFixture) -> None:
    def screen(user_agent: str) -> bool:
        raise RuntimeError("the bot service is down")

    with caplog.at_level(logging.ERROR, logger="optibase_edge"):
        hero, calls = first_visit({"user-agent": GOOGLEBOT}, screen)
    assert hero in ("control", "bold") and calls == PERSON
    assert any("screen_bots" in record.getMessage() for record in caplog.records)


def test_headless_chromium_is_a_bot_until_given_a_browsers_user_agent(browser: Any) -> None:
    app, _ = make_site([])
    with serve(app) as url:
        for user_agent, in_the_test in ((None, False), (DESKTOP_USER_AGENT, True)):
            context = browser.new_context(user_agent=user_agent)
            try:
                tab = context.new_page()
                tab.goto(url + "/")
                assert ("HeadlessChrome" in tab.evaluate("navigator.userAgent")) != in_the_test
                assert (tab.evaluate("JSON.parse(document.body.innerText).hero") is not None) == (
                    in_the_test
                )
            finally:
                context.close()

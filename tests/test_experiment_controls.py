"""Experiment controls over real HTTP: browser-fired conversions, previews, split-URL
variants, hosts and consent. The site runs under uvicorn and its Segment calls
reach a capture server, so what is asserted is what Segment would receive.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from optibase_edge import (
    Conversion,
    ConversionType,
    Optibase,
    OptibaseMiddleware,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._cookie import CookieCodec
from tests.support.capture import SegmentCapture
from tests.support.server import serve
from tests.support.user_agents import AS_A_BROWSER

WRITE_KEY = "wk-controls"
SECRET = "controls-secret-" + "k" * 32
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

PAGE = """<!doctype html><html><head><title>{title}</title></head><body>
<h1 data-variant="{variant}">{title}</h1>
<a id="next" href="{next}">next</a> <button id="signup">Sign up</button>
<pre id="query">{query}</pre>
</body></html>"""


def build_site(segment_endpoint: str, **settings: Any) -> tuple[Starlette, Optibase]:
    ob = Optibase(
        tests=[
            Test("hero", [Variant("control"), Variant("bold")], pages=["/"]),
            Test(
                "landing",
                [Variant("original"), Variant("new", path="/landing-new")],
                pages=["/landing*"],
                traffic=0.8,
            ),
        ],
        conversions=[
            Conversion("signup", ConversionType.CLICK, selector="#signup"),
            Conversion("contact", ConversionType.PAGE_VIEW, url="/contact"),
            Conversion("purchase", ConversionType.PROGRAMMATIC),
            Conversion("lead", ConversionType.PROGRAMMATIC, from_browser=True),
        ],
        secret_keys=[SECRET],
        segment_write_key=WRITE_KEY,
        segment_endpoint=segment_endpoint,
        flush_interval=0.05,
        **settings,
    )

    def page(title: str, next_page: str) -> Any:
        async def view(request: Request) -> HTMLResponse:
            variant = get_visitor(request).variant("hero")
            query = request.url.query
            return HTMLResponse(
                PAGE.format(title=title, variant=variant, next=next_page, query=query)
            )

        return view

    async def buy(request: Request) -> RedirectResponse:
        await get_visitor(request).convert("purchase")
        return RedirectResponse("/", status_code=303)

    async def flush(request: Request) -> JSONResponse:
        return JSONResponse({"flushed": await ob.flush(timeout=5)})

    app = Starlette(
        routes=[
            Route("/", page("home", "/about")),
            Route("/about", page("about", "/contact")),
            Route("/contact", page("contact", "/")),
            Route("/landing", page("original landing", "/")),
            Route("/landing-new", page("new landing", "/")),
            Route("/buy", buy, methods=["POST"]),
            Route("/flush", flush),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
        ]
    )
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app, ob


@contextmanager
def running_site(**settings: Any) -> Iterator[tuple[SegmentCapture, str]]:
    with SegmentCapture(write_key=WRITE_KEY) as capture:
        app, _ = build_site(capture.url, **settings)
        with serve(app) as url:
            yield capture, url


@pytest.fixture
def site() -> Iterator[tuple[SegmentCapture, str]]:
    with running_site() as running:
        yield running


def client(url: str, **headers: str) -> httpx2.Client:
    return httpx2.Client(base_url=url, headers={**AS_A_BROWSER, **headers})


def flushed(capture: SegmentCapture, url: str) -> list[dict[str, Any]]:
    """Every message Segment received once the site has flushed."""
    with client(url) as flusher:
        assert flusher.get("/flush").json() == {"flushed": True}
    return capture.messages


def of_kind(messages: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("event", m["type"]) == event]


def landing_views(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    views = of_kind(messages, "Experiment Viewed")
    return [v for v in views if v["properties"]["test_id"] == "landing"]


def shown(response: httpx2.Response) -> str:
    return response.text.split('data-variant="')[1].split('"')[0]


def title(response: httpx2.Response) -> str:
    return response.text.split("<title>")[1].split("</title>")[0]


def visitor_id(browser: httpx2.Client) -> str:
    record = CookieCodec([SECRET]).decode(browser.cookies["optibase_vid"])
    assert record is not None
    return record.visitor_id


def beacon(browser: httpx2.Client, url: str, kind: str, conversion_id: str) -> httpx2.Response:
    body = {"type": kind, "conversion_id": conversion_id, "url": f"{url}/", "referrer": ""}
    return browser.post(
        "/_optibase/collect", content=json.dumps(body), headers={"content-type": "application/json"}
    )


# -- browser-fired conversions only by opt-in ----------------------------------------------


def test_the_rigging_attempt_is_refused_and_records_nothing(
    site: tuple[SegmentCapture, str],
) -> None:
    capture, url = site
    for _ in range(20):
        with client(url) as visitor:
            visitor.get("/")
            refused = beacon(visitor, url, "conversion", "purchase")
            assert refused.status_code == 403
            assert refused.json() == {
                "error": "conversion 'purchase' is not fired from the browser"
            }
    conversions = of_kind(flushed(capture, url), "Conversion Triggered")
    assert conversions == []


def test_opted_in_and_server_side_conversions_still_count(site: tuple[SegmentCapture, str]) -> None:
    capture, url = site
    with client(url) as visitor:
        visitor.get("/")
        assert beacon(visitor, url, "conversion", "lead").status_code == 204
        assert visitor.post("/buy").status_code == 303
        assert beacon(visitor, url, "click", "signup").status_code == 204
        who = visitor_id(visitor)
    conversions = of_kind(flushed(capture, url), "Conversion Triggered")
    assert sorted((c["properties"]["conversion_id"], c["anonymousId"]) for c in conversions) == [
        ("lead", who),
        ("purchase", who),
        ("signup", who),
    ]


def test_the_page_api_fires_only_opted_in_conversions(
    site: tuple[SegmentCapture, str], page: Any, errors: list[str]
) -> None:
    capture, url = site
    page.goto(url + "/")
    page.wait_for_function("Array.isArray(window.optibaseActiveVariants)")
    with page.expect_response(lambda r: r.url.endswith("/collect")) as lead:
        page.evaluate("window.optibaseSendConversionEvent('lead')")
    assert lead.value.status == 204
    with page.expect_response(lambda r: r.url.endswith("/collect")) as purchase:
        page.evaluate("window.optibaseSendConversionEvent('purchase')")
    assert purchase.value.status == 403
    conversions = of_kind(flushed(capture, url), "Conversion Triggered")
    assert [c["properties"]["conversion_id"] for c in conversions] == ["lead"]
    # The refused beacon shows in the console as a failed request; nothing else may.
    assert [e for e in errors if "403" not in e] == []


# -- previews -------------------------------------------------------------------------------


def test_a_preview_session_clicks_through_three_pages_without_a_single_event(
    site: tuple[SegmentCapture, str], page: Any, errors: list[str]
) -> None:
    capture, url = site
    page.goto(url + "/?optibase_preview=hero:bold,ghost:x,landing:nope")
    assert page.get_attribute("h1", "data-variant") == "bold"
    assert page.evaluate("window.optibaseActiveVariants") == [
        {"userFriendlyTestId": "hero", "userFriendlyVariantId": "bold"}
    ]
    page.click("#signup")
    for expected in ("about", "contact", "home"):  # contact is a PAGE_VIEW conversion
        page.click("#next")
        page.wait_for_url(f"**/{'' if expected == 'home' else expected}")
        page.click("#signup")  # a CLICK conversion on every page
    assert page.get_attribute("h1", "data-variant") == "bold"  # the preview followed along
    assert flushed(capture, url) == []
    assert not [c for c in page.context.cookies() if c["name"] == "optibase_vid"]
    assert errors == []

    page.goto(url + "/?optibase_preview=off")
    assert not [c for c in page.context.cookies() if c["name"] == "optibase_vid_preview"]
    messages = capture.wait_for(lambda m: len(m) >= 2, "the visit after the preview")
    assert {m.get("event", m["type"]) for m in messages} == {"identify", "Experiment Viewed"}


def test_a_preview_leaves_the_visitors_cookie_and_assignment_alone(
    site: tuple[SegmentCapture, str],
) -> None:
    capture, url = site
    with client(url) as visitor:
        first = visitor.get("/")
        cookie = visitor.cookies["optibase_vid"]
        own = shown(first)
        other = "control" if own == "bold" else "bold"
        before = len(flushed(capture, url))

        preview = visitor.get(f"/?optibase_preview=hero:{other}")
        assert shown(preview) == other
        assert preview.headers["cache-control"] == "no-store"
        assert "optibase_vid=" not in preview.headers.get("set-cookie", "")
        assert "optibase_vid_preview=" in preview.headers["set-cookie"]
        # A session cookie: it ends with the browser session.
        assert "max-age" not in preview.headers["set-cookie"].lower()
        assert shown(visitor.get("/about")) == other
        assert visitor.post("/buy").status_code == 303
        assert beacon(visitor, url, "click", "signup").status_code == 204
        assert visitor.get("/_optibase/variants").json()["variants"] == [
            {"test_id": "hero", "variant_id": other}
        ]

        ended = visitor.get("/?optibase_preview=off")
        assert shown(ended) == own
        assert visitor.cookies["optibase_vid"] == cookie
        assert "optibase_vid_preview" not in visitor.cookies
    assert len(flushed(capture, url)) == before


def tagged_variants(response: httpx2.Response) -> list[dict[str, str]]:
    """What the injected tag tells the page's script: its ``data-optibase-variants``."""
    found = re.search(r'data-optibase-variants="([^"]*)"', response.text)
    assert found is not None, response.text
    variants: list[dict[str, str]] = json.loads(html.unescape(found.group(1)))
    return variants


def test_the_tag_of_a_returning_visitor_follows_a_preview_and_its_end(
    site: tuple[SegmentCapture, str],
) -> None:
    # The tag of a returning visitor is cached per cookie: a preview, which keeps the
    # cookie, must neither be served the cached tag nor leave its own in that cache.
    _, url = site
    with client(url) as visitor:
        own = shown(visitor.get("/"))
        other = "control" if own == "bold" else "bold"
        assert tagged_variants(visitor.get("/")) == [{"test_id": "hero", "variant_id": own}]
        preview = visitor.get(f"/?optibase_preview=hero:{other}")
        assert tagged_variants(preview) == [{"test_id": "hero", "variant_id": other}]
        assert tagged_variants(visitor.get("/about")) == [{"test_id": "hero", "variant_id": other}]
        ended = visitor.get("/?optibase_preview=off")
        assert tagged_variants(ended) == [{"test_id": "hero", "variant_id": own}]
        assert tagged_variants(visitor.get("/about")) == [{"test_id": "hero", "variant_id": own}]


@pytest.mark.parametrize("value", ["ghost:x", "hero:nope", "hero", ":", ",,", "x" * 5000])
def test_a_preview_naming_nothing_real_is_ignored(
    site: tuple[SegmentCapture, str], value: str
) -> None:
    capture, url = site
    with client(url) as visitor:
        response = visitor.get("/", params={"optibase_preview": value})
        assert response.status_code == 200
        assert "optibase_vid_preview" not in visitor.cookies
        assert shown(response) in ("control", "bold")
        who = visitor_id(visitor)
    views = of_kind(flushed(capture, url), "Experiment Viewed")
    assert [v["anonymousId"] for v in views] == [who]


def test_previews_can_be_turned_off() -> None:
    with running_site(preview_param=None) as (capture, url), client(url) as visitor:
        response = visitor.get("/?optibase_preview=hero:bold")
        assert "optibase_vid_preview" not in visitor.cookies
        assert visitor_id(visitor)
        assert len(of_kind(flushed(capture, url), "Experiment Viewed")) == 1
        assert shown(response) in ("control", "bold")


# -- split-URL variants ---------------------------------------------------------------------


def test_rewrite_serves_each_visitor_their_page_and_keeps_the_url(
    site: tuple[SegmentCapture, str],
) -> None:
    capture, url = site
    served: dict[str, str] = {}
    with client(url) as visitor:
        for _ in range(400):
            visitor.cookies.clear()  # the next visitor, on the same connection
            response = visitor.get("/landing?utm_source=ads")
            assert response.status_code == 200
            assert response.history == []  # no redirect: the address bar keeps /landing
            assert response.text.split('<pre id="query">')[1].startswith("utm_source=ads<")
            served[visitor_id(visitor)] = title(response)
    views = {v["anonymousId"]: v for v in landing_views(flushed(capture, url))}
    expected = {"original": "original landing", "new": "new landing"}
    for who, page_title in served.items():
        view = views.get(who)
        # Outside the 80 % traffic share: the original page, and no exposure.
        assert page_title == (
            expected[view["properties"]["variant_id"]] if view else "original landing"
        )
    for view in views.values():
        assert view["context"]["page"]["url"] == f"{url}/landing?utm_source=ads"
    split = Counter(v["properties"]["variant_id"] for v in views.values())
    assert len(views) == pytest.approx(320, abs=48)
    assert split["new"] == pytest.approx(len(views) / 2, abs=50)


def test_redirect_answers_302_and_the_variant_page_is_not_assigned_again() -> None:
    with running_site(split_url="redirect") as (capture, url):
        redirected = 0
        with client(url) as visitor:
            for _ in range(40):
                visitor.cookies.clear()
                first = visitor.get("/landing?utm_source=ads")
                if first.status_code == 302:
                    redirected += 1
                    assert first.headers["location"] == "/landing-new?utm_source=ads"
                    assert "private" in first.headers["cache-control"]
                    landed = visitor.get(first.headers["location"])
                    assert title(landed) == "new landing"
                else:
                    assert title(first) == "original landing"
        views = landing_views(flushed(capture, url))
    assert 5 < redirected < 35
    assert Counter(v["properties"]["variant_id"] for v in views)["new"] == redirected
    assert all(v["context"]["page"]["path"] == "/landing" for v in views)


def test_the_variant_page_itself_assigns_nothing(site: tuple[SegmentCapture, str]) -> None:
    capture, url = site
    with client(url) as visitor:
        assert title(visitor.get("/landing-new")) == "new landing"
    assert landing_views(flushed(capture, url)) == []


def test_a_bot_gets_the_original_page(site: tuple[SegmentCapture, str]) -> None:
    capture, url = site
    for _ in range(20):
        with client(url, **{"User-Agent": GOOGLEBOT}) as bot:
            assert title(bot.get("/landing")) == "original landing"
    assert flushed(capture, url) == []


def test_a_preview_can_force_a_split_variant(site: tuple[SegmentCapture, str]) -> None:
    capture, url = site
    with client(url) as tester:
        assert title(tester.get("/landing?optibase_preview=landing:new")) == "new landing"
        assert title(tester.get("/landing?optibase_preview=landing:original")) == "original landing"
    assert flushed(capture, url) == []


@pytest.mark.parametrize("split_url", ["rewrite", "redirect"])
def test_split_urls_under_a_mount(split_url: str) -> None:
    with SegmentCapture(write_key=WRITE_KEY) as capture:
        shop, _ = build_site(capture.url, split_url=split_url)
        app = Starlette(routes=[Mount("/shop", app=shop)])
        titles: Counter[str] = Counter()
        with serve(app) as url:
            with client(url) as visitor:
                for _ in range(60):
                    visitor.cookies.clear()
                    response = visitor.get("/shop/landing", follow_redirects=True)
                    assert response.status_code == 200
                    titles[title(response)] += 1
                    if response.history:
                        assert response.history[0].headers["location"] == "/shop/landing-new"
            with client(url) as flusher:
                assert flusher.get("/shop/flush").json() == {"flushed": True}
            views = landing_views(capture.messages)
    assert titles["new landing"] == Counter(v["properties"]["variant_id"] for v in views)["new"]
    assert titles["new landing"] > 5
    assert all(v["context"]["page"]["path"] == "/shop/landing" for v in views)


# -- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("www.example.com", True),
        ("WWW.Example.COM.", True),
        ("shop.example.com:8443", True),
        ("a.b.example.com", True),
        ("example.com", False),
        ("staging.example.net", False),
        ("preview-123.vercel.app", False),
        ("127.0.0.1", False),
        ("evil-example.com", False),
    ],
)
def test_only_listed_hosts_take_part(host: str, allowed: bool) -> None:
    with running_site(hosts=["www.example.com", "*.example.com"]) as (capture, url):
        with client(url, host=host) as visitor:
            response = visitor.get("/")
            assert response.status_code == 200
            assert ("optibase_vid" in visitor.cookies) is allowed
            assert (shown(response) != "None") is allowed
            assert beacon(visitor, f"http://{host}", "click", "signup").status_code in (204, 403)
        messages = flushed(capture, url)
    assert bool(messages) is allowed


# -- consent --------------------------------------------------------------------------------


def has_consent(scope: Any) -> bool:
    return any(k == b"cookie" and b"consent=yes" in v for k, v in scope["headers"])


def test_no_consent_means_no_cookie_no_event_and_no_variant() -> None:
    with running_site(consent=has_consent) as (capture, url):
        with client(url) as refuser:
            for path in ("/", "/contact", "/landing"):
                response = refuser.get(path)
                assert response.status_code == 200
                assert "set-cookie" not in response.headers
            assert shown(refuser.get("/")) == "None"
            assert title(refuser.get("/landing")) == "original landing"
            assert refuser.post("/buy").status_code == 303
            assert refuser.get("/_optibase/variants").json()["variants"] == []
        assert flushed(capture, url) == []

        with client(url, cookie="consent=yes") as agreed:
            assert shown(agreed.get("/")) in ("control", "bold")
            assert "optibase_vid" in agreed.cookies
            who = visitor_id(agreed)
        assert {m["anonymousId"] for m in flushed(capture, url)} == {who}


def test_a_consent_withdrawn_later_stops_everything() -> None:
    with running_site(consent=has_consent) as (capture, url):
        with client(url, cookie="consent=yes") as visitor:
            visitor.get("/")
            cookie = visitor.cookies["optibase_vid"]
        before = len(flushed(capture, url))
        with client(url, cookie=f"optibase_vid={cookie}") as withdrawn:
            assert shown(withdrawn.get("/")) == "None"
            assert withdrawn.post("/buy").status_code == 303
            assert beacon(withdrawn, url, "click", "signup").status_code == 204
        assert len(flushed(capture, url)) == before


@pytest.mark.parametrize(("honor_gpc", "recorded"), [(True, False), (False, True)])
def test_global_privacy_control(honor_gpc: bool, recorded: bool) -> None:
    with running_site(honor_gpc=honor_gpc) as (capture, url):
        with client(url, **{"sec-gpc": "1"}) as visitor:
            response = visitor.get("/")
            assert ("optibase_vid" in visitor.cookies) is recorded
            assert (shown(response) != "None") is recorded
        assert bool(flushed(capture, url)) is recorded


def test_a_failing_consent_callable_is_no_consent_and_never_an_error_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(scope: Any) -> bool:
        raise RuntimeError("consent service down")

    with (
        caplog.at_level(logging.WARNING, "optibase_edge"),
        running_site(consent=broken) as (capture, url),
        client(url) as visitor,
    ):
        for _ in range(5):
            response = visitor.get("/")
            assert response.status_code == 200
            assert shown(response) == "None"
        assert flushed(capture, url) == []
    warnings = [r.getMessage() for r in caplog.records if "consent" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited, not one per request
    assert "consent service down" in warnings[0]

"""The pure parts of the experiment controls: caching headers, the hosts list, previews."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optibase_edge import Optibase, Test, Variant
from optibase_edge._caching import for_one_visitor, not_stored
from optibase_edge._hosts import HostAllowList
from optibase_edge._preview import Previews

# -- caching headers ------------------------------------------------------------------------

DIRECTIVES = [
    b"public",
    b"private",
    b"no-store",
    b"no-cache",
    b"max-age=3600",
    b"s-maxage=600",
    b"must-revalidate",
    b"proxy-revalidate",
    b"immutable",
    b'private="set-cookie"',
    b"stale-while-revalidate=30",
    b"Public",
    b"S-MaxAge=5",
]
OTHER_HEADERS = [
    (b"content-type", b"text/html"),
    (b"etag", b'"abc"'),
    (b"cdn-cache-control", b"max-age=600"),
    (b"Surrogate-Control", b"max-age=600"),
    (b"cloudflare-cdn-cache-control", b"max-age=60"),
    (b"x-app", b"1"),
    (b"set-cookie", b"a=b"),
]


SHARED_ONLY = {b"public", b"s-maxage", b"proxy-revalidate"}
CDN_HEADERS = {b"cdn-cache-control", b"surrogate-control", b"cloudflare-cdn-cache-control"}


def cache_control_of(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    values = [v for k, v in headers if k.lower() == b"cache-control"]
    assert len(values) == 1
    return [d.strip().lower() for d in values[0].split(b",")]


@given(
    directives=st.lists(st.sampled_from(DIRECTIVES), max_size=5),
    split=st.booleans(),
    others=st.lists(st.sampled_from(OTHER_HEADERS), max_size=6),
    drop_etag=st.booleans(),
)
def test_a_per_visitor_response_is_never_for_a_shared_cache(
    directives: list[bytes], split: bool, others: list[tuple[bytes, bytes]], drop_etag: bool
) -> None:
    caching = (
        [(b"Cache-Control", d) for d in directives]
        if split
        else ([(b"cache-control", b", ".join(directives))] if directives else [])
    )
    headers = for_one_visitor([*others, *caching], drop_etag=drop_etag)
    result = cache_control_of(headers)
    lowered = [d.lower() for d in directives]
    if b"no-store" in lowered or b"private" in lowered:
        assert result == lowered  # the app already kept shared caches out: as written
    else:
        for_browsers = [
            d
            for d in lowered
            if d.partition(b"=")[0] not in SHARED_ONLY and not d.startswith(b"private")
        ]
        assert result == [b"private", *for_browsers]
    names = [k.lower() for k, _ in headers]
    assert not CDN_HEADERS & set(names)
    assert (b"etag" in names) is (not drop_etag and any(k == b"etag" for k, _ in others))
    assert b"vary" not in names
    untouched = [h for h in others if h[0].lower() not in CDN_HEADERS | {b"etag"}]
    assert [h for h in headers if h[0].lower() not in (b"etag", b"cache-control")] == untouched


def test_typical_app_headers() -> None:
    def rewrite(value: bytes) -> bytes:
        headers = for_one_visitor([(b"cache-control", value)], drop_etag=False)
        return headers[-1][1]

    assert rewrite(b"public, max-age=3600") == b"private, max-age=3600"
    assert rewrite(b"max-age=60, s-maxage=600") == b"private, max-age=60"
    assert rewrite(b"no-store") == b"no-store"
    assert rewrite(b"private, max-age=60") == b"private, max-age=60"
    assert rewrite(b'private="Set-Cookie", max-age=60') == b"private, max-age=60"
    assert for_one_visitor([], drop_etag=True) == [(b"cache-control", b"private")]


def test_a_preview_is_not_stored_anywhere() -> None:
    headers = not_stored(
        [(b"cache-control", b"public, max-age=60"), (b"etag", b"x"), (b"x-app", b"1")]
    )
    assert headers == [(b"x-app", b"1"), (b"cache-control", b"no-store")]


# -- the hosts list -------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(sub=st.lists(labels, min_size=1, max_size=3), port=st.none() | st.integers(1, 65535))
def test_a_wildcard_takes_every_subdomain_and_nothing_else(
    sub: list[str], port: int | None
) -> None:
    allow = HostAllowList(["*.example.com"])
    host = ".".join([*sub, "example.com"])
    suffix = f":{port}" if port else ""
    assert allow.allows(f"{host}{suffix}".encode())
    assert allow.allows(f"{host.upper()}.{suffix}".encode())
    assert not allow.allows(f"{'.'.join(sub)}example.com{suffix}".encode())
    assert not allow.allows(f"{host}.evil.net{suffix}".encode())


def test_exact_names_and_what_is_never_allowed() -> None:
    allow = HostAllowList(["www.example.com", "127.0.0.1"])
    assert allow.allows(b"www.example.com")
    assert allow.allows(b"127.0.0.1:8000")
    assert not allow.allows(b"example.com")
    assert not allow.allows(b"wwwxexample.com")
    assert not allow.allows(None)
    assert not allow.allows(b"")
    assert not allow.allows(b"[::1]:8000")


@given(st.binary(max_size=40))
def test_any_host_header_gets_an_answer(host: bytes) -> None:
    assert HostAllowList(["*.example.com", "example.com"]).allows(host) in (True, False)


# -- previews -------------------------------------------------------------------------------

OB = Optibase(
    tests=[
        Test("hero", [Variant("control"), Variant("bold")]),
        Test("cta", [Variant("green"), Variant("red"), Variant("blue")]),
    ],
    secret_keys=["p" * 32],
)
KNOWN = {("hero", "control"), ("hero", "bold"), ("cta", "green"), ("cta", "red"), ("cta", "blue")}


def previews() -> Previews:
    assert OB._previews is not None
    return OB._previews


def scope(query: bytes = b"", cookie: bytes | None = None) -> dict[str, Any]:
    headers = [(b"cookie", cookie)] if cookie is not None else []
    return {"type": "http", "query_string": query, "headers": headers, "scheme": "http"}


names = st.sampled_from(["hero", "cta", "ghost", "control", "bold", "red", " hero", ""])
preview_values = st.text(max_size=200) | st.lists(
    st.tuples(names | st.text(max_size=6), names | st.text(max_size=6)), max_size=5
).map(lambda items: ",".join(f"{t}:{v}" for t, v in items))


@given(preview_values)
def test_only_real_pairs_are_forced(value: str) -> None:
    forced = previews().parse(value)
    assert set(forced.items()) <= KNOWN
    named = {(t.strip(), v.strip()) for t, _, v in (p.partition(":") for p in value.split(","))}
    assert set(forced.items()) == {pair for pair in named if pair in KNOWN} or len(
        {t for t, _ in named & KNOWN}
    ) < len(named & KNOWN)  # a test named twice: the last one wins


pairs = st.lists(st.sampled_from(sorted(KNOWN)), min_size=1, max_size=4)


@given(pairs)
def test_the_cookie_carries_what_the_parameter_forced(chosen: list[tuple[str, str]]) -> None:
    value = ",".join(f"{t}:{v}" for t, v in chosen)
    forced, header = previews().read(scope(b"optibase_preview=" + value.encode()))
    assert forced == dict(chosen)
    assert header is not None
    cookie = header[1].split(b";")[0]
    assert previews().from_cookie(scope(cookie=b"other=1; " + cookie)) == forced


def test_off_clears_and_nothing_real_changes_nothing() -> None:
    cookie = b"optibase_vid_preview=hero%3Abold"
    forced, header = previews().read(scope(b"optibase_preview=off", cookie))
    assert forced == {}
    assert header is not None and b"Max-Age=0" in header[1]
    kept, none = previews().read(scope(b"optibase_preview=ghost:x", cookie))
    assert kept == {"hero": "bold"} and none is None
    assert previews().read(scope(b"other=1")) == ({}, None)
    assert previews().read(scope(b"xoptibase_preview=hero:bold")) == ({}, None)

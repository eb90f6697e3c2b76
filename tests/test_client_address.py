"""The client's IP and scheme behind proxies, and what of the IP reaches Segment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import (
    Batch,
    ConfigError,
    MockTransport,
    Optibase,
    OptibaseMiddleware,
    Outcome,
    Test,
    Variant,
    get_visitor,
)
from optibase_edge._proxies import TrustedProxies, parse_networks, reported_ip
from tests.support.user_agents import AS_A_BROWSER

SECRET = "client-address-secret-" + "c" * 32
PROXIES = TrustedProxies(parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"]))


def scope_from(peer: str | None, scheme: str = "http") -> dict[str, Any]:
    return {"client": (peer, 4711) if peer else None, "scheme": scheme}


def forwarded(xff: str | None = None, proto: str | None = None) -> Mapping[bytes, bytes]:
    headers = {}
    if xff is not None:
        headers[b"x-forwarded-for"] = xff.encode()
    if proto is not None:
        headers[b"x-forwarded-proto"] = proto.encode()
    return headers


# -- the pure rule ------------------------------------------------------------------------


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    headers = forwarded("1.2.3.4", "https")
    assert PROXIES.client(scope_from("203.0.113.9"), headers) == ("203.0.113.9", "http")


def test_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client wrote "6.6.6.6" itself; the trusted proxy appended the real peer.
    headers = forwarded("6.6.6.6, 198.51.100.7, 10.1.1.1", "https")
    assert PROXIES.client(scope_from("10.0.0.2"), headers) == ("198.51.100.7", "https")


def test_proto_is_the_nearest_proxys_value_and_only_http_or_https() -> None:
    assert PROXIES.client(scope_from("10.0.0.2"), forwarded("1.1.1.1", "https, http"))[1] == "http"
    assert PROXIES.client(scope_from("10.0.0.2"), forwarded("1.1.1.1", "gopher"))[1] == "http"
    assert PROXIES.client(scope_from("10.0.0.2", "https"), forwarded("1.1.1.1"))[1] == "https"


def test_hops_with_ports_and_ipv6_and_garbage() -> None:
    assert PROXIES.client(scope_from("10.0.0.2"), forwarded("198.51.100.7:5555"))[0] == (
        "198.51.100.7"
    )
    assert PROXIES.client(scope_from("10.0.0.2"), forwarded("[2001:db8:1::5]:443"))[0] == (
        "2001:db8:1::5"
    )
    # not an address: nothing left of it is believed; the last trusted hop stands
    assert PROXIES.client(scope_from("10.0.0.2"), forwarded("1.1.1.1, junk"))[0] == "10.0.0.2"
    # every hop trusted: the left-most is as far as anyone can see
    assert PROXIES.client(scope_from("10.0.0.2"), forwarded("10.9.9.9, 10.0.0.3"))[0] == "10.9.9.9"
    # an IPv4-mapped IPv6 peer is the IPv4 proxy it is
    assert PROXIES.client(scope_from("::ffff:10.0.0.2"), forwarded("1.1.1.1"))[0] == "1.1.1.1"


addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.text(max_size=12)
)


@given(peer=st.ip_addresses().map(str), hops=st.lists(addresses, max_size=6), proto=st.text())
def test_the_client_is_never_a_hop_a_trusted_proxy_did_not_vouch_for(
    peer: str, hops: list[str], proto: str
) -> None:
    headers = forwarded(", ".join(hops), proto)
    ip, scheme = PROXIES.client(scope_from(peer), headers)
    assert scheme in ("http", "https")
    if not PROXIES._trusted(peer):
        assert ip == peer and scheme == "http"
        return
    # The answer is the peer or a hop, with only trusted hops to its right.
    chain = [peer, *reversed([h.strip() for h in hops])]
    assert ip is not None and ipaddress.ip_address(ip)
    position = next(i for i, hop in enumerate(chain) if _same(hop, ip))
    assert all(PROXIES._trusted(hop) for hop in chain[:position])


def _same(hop: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(hop) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def test_reported_ip_modes() -> None:
    assert reported_ip("203.0.113.77", "full") == "203.0.113.77"
    assert reported_ip("203.0.113.77", "anonymized") == "203.0.113.0"
    assert reported_ip("2001:db8:abcd:12:1::9", "anonymized") == "2001:db8:abcd::"
    assert reported_ip("203.0.113.77", "none") is None
    assert reported_ip("not-an-ip", "anonymized") is None
    assert reported_ip(None, "full") is None


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Optibase(trusted_proxies=["10.0.0.0/33"])
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Optibase(trusted_proxies="10.0.0.0/8")
    with pytest.raises(ConfigError, match="ip"):
        Optibase(ip="partial")  # type: ignore[arg-type]


# -- through the middleware ---------------------------------------------------------------


async def page(request: Request) -> Response:
    return PlainTextResponse(get_visitor(request).variant("hero") or "-")


def site(received: list[dict[str, Any]], **settings: Any) -> Starlette:
    def handler(batch: Batch) -> Outcome:
        received.extend(batch.decoded())
        return Outcome(200)

    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("a"), Variant("b")])],
        secret_keys=[SECRET],
        transport=MockTransport(handler),
        flush_interval=0.01,
        **settings,
    )
    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app


def visit(app: Starlette, client_ip: str, headers: dict[str, str]) -> tuple[str, str]:
    """One page from *client_ip*: the Set-Cookie header, and the events' context."""
    with TestClient(app, client=(client_ip, 50000), headers=dict(AS_A_BROWSER)) as client:
        response = client.get("/", headers=headers)
        assert response.status_code == 200
        return response.headers["set-cookie"], str(response.request.url)


@pytest.mark.parametrize(
    ("settings", "peer", "ip", "secure", "url"),
    [
        ({}, "10.0.0.2", "10.0.0.2", False, "http://testserver/"),
        ({"trusted_proxies": ["10.0.0.0/8"]}, "10.0.0.2", "198.51.100.7", True, "https://"),
        ({"trusted_proxies": ["10.0.0.0/8"]}, "192.0.2.1", "192.0.2.1", False, "http://"),
        (
            {"trusted_proxies": ["10.0.0.0/8"], "ip": "anonymized"},
            "10.0.0.2",
            "198.51.100.0",
            True,
            "https://",
        ),
        ({"ip": "none"}, "10.0.0.2", None, False, "http://"),
    ],
)
def test_events_and_cookie_follow_the_trusted_client(
    settings: dict[str, Any], peer: str, ip: str | None, secure: bool, url: str
) -> None:
    received: list[dict[str, Any]] = []
    app = site(received, **settings)
    headers = {"x-forwarded-for": "6.6.6.6, 198.51.100.7", "x-forwarded-proto": "https"}
    set_cookie, _ = visit(app, peer, headers)
    assert ("; Secure" in set_cookie) is secure
    assert {m["type"] for m in received} >= {"identify", "track"}
    for message in received:
        context = message["context"]
        assert context.get("ip") == ip
        assert context["page"]["url"].startswith(url)

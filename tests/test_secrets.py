"""Secrets stay secret and cookies are read as a browser sends them.

No secret key or write key in any repr, ConfigError, log line or ``stats()``;
a secret key shorter than 32 characters is refused; every cookie of our name
is tried; a ``__Host-`` cookie name is always Secure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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
from optibase_edge._cookie import CookieCodec
from optibase_edge._settings import Settings
from tests.support.user_agents import AS_A_BROWSER

SECRET = "s3cr3t-" + "q" * 40
OLD_SECRET = "old-s3cr3t-" + "r" * 40
WRITE_KEY = "wk-never-shown-7Yx"
SECRETS = (SECRET, OLD_SECRET, WRITE_KEY)


def shows_no_secret(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


@pytest.mark.parametrize("length", [1, 16, 31])
def test_a_short_secret_key_is_refused_naming_the_field_not_the_key(length: int) -> None:
    short = "Z" * length
    with pytest.raises(ConfigError, match=r"secret_keys\[1\] is too short") as caught:
        Optibase(secret_keys=[SECRET, short])
    assert "Z" not in str(caught.value)
    with pytest.raises(ConfigError, match="secret_keys"):
        Settings(secret_keys=(short,))
    Settings(secret_keys=("k" * 32,))  # 32 is enough


def test_a_short_key_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIBASE_SECRET_KEYS", f"{SECRET},tiny")
    with pytest.raises(ConfigError, match=r"secret_keys\[1\]"):
        Optibase()


@pytest.mark.parametrize(
    "settings",
    [
        {"secret_keys": [SECRET, 12345]},
        {"secret_keys": [SECRET], "segment_write_key": b"wk-never-shown-7Yx"},
        {"secret_keys": SECRET.encode()},
    ],
)
def test_a_mistyped_secret_is_refused_without_showing_it(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        Optibase(**settings)
    message = str(caught.value)
    assert shows_no_secret(message) and "12345" not in message, message


def test_no_repr_or_stat_shows_a_secret(tmp_path: Path) -> None:
    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("a"), Variant("b")])],
        secret_keys=[OLD_SECRET, SECRET],
        segment_write_key=WRITE_KEY,
    )
    shown = [repr(ob), repr(ob.settings), str(ob.settings), repr(ob._delivery._transport)]
    shown.append(repr(ob.stats()))
    for text in shown:
        assert shows_no_secret(text), text


def test_no_log_line_shows_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    """Start-up, a page, and a transport failing with the key in its error: nothing leaks."""

    def handler(batch: Batch) -> Outcome:
        raise ConnectionError(f"https://{WRITE_KEY}:@api.segment.io refused")

    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("a"), Variant("b")])],
        secret_keys=[SECRET],
        segment_write_key=WRITE_KEY,
        transport=MockTransport(handler),
        retry_max_time=0.2,
        shutdown_timeout=0.5,
    )
    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    with (
        caplog.at_level(logging.DEBUG, logger="optibase_edge"),
        TestClient(app, headers=dict(AS_A_BROWSER)) as client,
    ):
        assert client.get("/").status_code == 200
    assert caplog.records, "the failing transport must have been logged"
    for record in caplog.records:
        assert shows_no_secret(record.getMessage()), record.getMessage()


# -- cookies ------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    visitor = get_visitor(request)
    return JSONResponse({"id": visitor.id, "hero": visitor.variant("hero")})


def site(tmp_path: Path, **settings: Any) -> tuple[Starlette, Optibase]:
    ob = Optibase(
        tests=[Test(id="hero", variants=[Variant("a"), Variant("b")])],
        secret_keys=[SECRET],
        events_path=tmp_path / "events.jsonl",
        **settings,
    )
    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    return app, ob


def test_every_cookie_of_our_name_is_tried(tmp_path: Path) -> None:
    """``optibase_vid=junk; optibase_vid=<valid>`` is the valid visitor, not a new one."""
    app, _ = site(tmp_path)
    with TestClient(app, headers=dict(AS_A_BROWSER)) as client:
        first = client.get("/")
        token = first.cookies["optibase_vid"]
        client.cookies.clear()
        for junk in ("junk", token[:-2] + "xx", ""):
            again = client.get(
                "/", headers={"cookie": f"optibase_vid={junk}; optibase_vid={token}"}
            )
            assert again.json() == first.json()
            assert "set-cookie" not in again.headers  # nothing changed: nothing to write
        # and in two Cookie headers (HTTP/2 may split them)
        again = client.get(
            "/", headers=[("cookie", "optibase_vid=junk"), ("cookie", f"optibase_vid={token}")]
        )
        assert again.json() == first.json()


@pytest.mark.parametrize("name", ["__Host-optibase_vid", "__Secure-optibase_vid"])
def test_a_prefixed_cookie_name_is_always_secure(tmp_path: Path, name: str) -> None:
    app, ob = site(tmp_path, cookie_name=name)
    assert ob.settings.cookie_secure is True
    with TestClient(app, headers=dict(AS_A_BROWSER)) as client:  # plain http: still Secure
        response = client.get("/")
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith(f"{name}=")
        assert "; Secure" in set_cookie and "; Path=/" in set_cookie
        assert "domain" not in set_cookie.lower()  # __Host- forbids it
        token = set_cookie.split(";", 1)[0].split("=", 1)[1]
        assert CookieCodec([SECRET]).decode(token) is not None
        again = client.get("/", headers={"cookie": f"{name}={token}"})
        assert again.json() == response.json()
    with pytest.raises(ConfigError, match="cookie_secure"):
        Optibase(secret_keys=[SECRET], cookie_name=name, cookie_secure=False)

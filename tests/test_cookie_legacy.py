"""The first cookie format (itsdangerous, base64 JSON): still read, always stale, re-signed.

Tokens here are made by ``legacy_token``, which signs exactly as the codec did before
format 2; the two constants below were written by that code, and pin the helper to it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import Signer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import Optibase, OptibaseMiddleware, Test, Variant, get_visitor
from optibase_edge._cookie import MAX_TOKEN_LENGTH, CookieCodec, VisitorRecord
from tests.support.user_agents import AS_A_BROWSER

SALT = "optibase-visitor"
VID = "6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a"
COOKIE_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~=+/!*"
# CookieCodec(["k1"]).encode(VID, {"hero": "bold", "cta": "green"}) before format 2
WRITTEN_BEFORE = (
    "WyI2ZjFjNmEzOC0wZDVlLTRiOGUtOWEzZS0yYjdmMGUzYzFkMmEiLHsiaGVybyI6ImJvbGQiLCJjdGEiOiJncmVlbiJ9XQ"
    ".Kfojnez2fSBZOpG4rqNd-y6SGZo"
)
# ... .encode(VID, {"hero": "bold", "x.y z": "é%"}, identify_owed=True)
WRITTEN_BEFORE_OWED = (
    "WyI2ZjFjNmEzOC0wZDVlLTRiOGUtOWEzZS0yYjdmMGUzYzFkMmEiLHsiaGVybyI6ImJvbGQiLCJ4LnkgeiI6Ilx1MDBl"
    "OSUifSwxXQ.-ZTAIz-eYfU7qAvp4Ads0tKl4XQ"
)

visitor_ids = st.uuids(version=4).map(str)
identifiers = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
assignments_st = st.dictionaries(identifiers, identifiers, max_size=6)


def legacy_token(key: str, payload: Any) -> str:
    """A first-format token for any payload, signed as the codec did before format 2."""
    return legacy_raw(key, json.dumps(payload, separators=(",", ":")).encode())


def legacy_raw(key: str, raw: bytes) -> str:
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=")
    return Signer(key, salt=SALT).sign(encoded).decode("ascii")


def test_the_helper_signs_as_the_codec_did() -> None:
    assert legacy_token("k1", [VID, {"hero": "bold", "cta": "green"}]) == WRITTEN_BEFORE
    assert legacy_token("k1", [VID, {"hero": "bold", "x.y z": "é%"}, 1]) == WRITTEN_BEFORE_OWED


def test_tokens_written_before_are_read_and_stale() -> None:
    assert CookieCodec(["k1"]).decode(WRITTEN_BEFORE) == VisitorRecord(
        VID, {"hero": "bold", "cta": "green"}, stale=True
    )
    assert CookieCodec(["k1"]).decode(WRITTEN_BEFORE_OWED) == VisitorRecord(
        VID, {"hero": "bold", "x.y z": "é%"}, stale=True, identify_owed=True
    )


@settings(max_examples=200, deadline=None)
@given(visitor_id=visitor_ids, assignments=assignments_st, identify_owed=st.booleans())
def test_any_legacy_token_reads_as_written_and_is_re_signed(
    visitor_id: str, assignments: dict[str, str], identify_owed: bool
) -> None:
    payload: list[Any] = [visitor_id, assignments, *([1] if identify_owed else [])]
    codec = CookieCodec(["k1"])
    record = codec.decode(legacy_token("k1", payload))
    assert record == VisitorRecord(visitor_id, assignments, True, identify_owed)
    # what the response writes instead: format 2, and no longer stale
    resigned = codec.encode(record.visitor_id, record.assignments, record.identify_owed)
    assert resigned.startswith("2.")
    assert CookieCodec(["k1"]).decode(resigned) == VisitorRecord(
        visitor_id, assignments, False, identify_owed
    )


def test_legacy_key_rotation() -> None:
    token = legacy_token("old", [VID, {"hero": "bold"}])
    expected = VisitorRecord(VID, {"hero": "bold"}, stale=True)
    assert CookieCodec(["old", "new"]).decode(token) == expected
    assert CookieCodec(["old", "new", "newer"]).decode(token) == expected
    assert CookieCodec(["new"]).decode(token) is None
    assert CookieCodec(["new", "newer"]).decode(token) is None


def test_no_legacy_token_reads_as_format_2() -> None:
    # "." is no base64url character: a first-format token starting "2." signs the lone
    # payload "2", which is no base64, so the legacy reader never owned that prefix.
    assert CookieCodec(["k1"]).decode(Signer("k1", salt=SALT).sign(b"2").decode()) is None
    # and a format-2 token is never handed to the legacy reader, even if it would unsign
    format_2 = CookieCodec(["k1"]).encode(VID, {"hero": "bold"})
    assert Signer("k1", salt=SALT).validate(format_2) is False


@pytest.fixture(scope="module")
def good_token() -> str:
    return legacy_token("k1", [VID, {"hero": "bold", "cta": "green"}])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_character_change_is_rejected(good_token: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(good_token) - 1), label="position")
    replacement = data.draw(
        st.sampled_from(COOKIE_SAFE).filter(lambda c: c != good_token[position]),
        label="replacement",
    )
    tampered = good_token[:position] + replacement + good_token[position + 1 :]
    assert CookieCodec(["k1"]).decode(tampered) is None


def test_every_single_character_change_of_the_signature_is_rejected(good_token: str) -> None:
    codec = CookieCodec(["k1"])
    signature_start = good_token.rindex(".") + 1
    accepted = [
        (i, c)
        for i in range(signature_start, len(good_token))
        for c in COOKIE_SAFE
        if c != good_token[i] and codec.decode(good_token[:i] + c + good_token[i + 1 :]) is not None
    ]
    assert accepted == []


@pytest.mark.parametrize("cut", [1, 2, 5, 27, 28, 40])
def test_truncated(good_token: str, cut: int) -> None:
    codec = CookieCodec(["k1"])
    assert codec.decode(good_token[:-cut]) is None
    assert codec.decode(good_token[cut:]) is None


def test_oversized_validly_signed_token() -> None:
    token = legacy_token("k1", [VID, {"t": "x" * MAX_TOKEN_LENGTH}])
    assert len(token) > MAX_TOKEN_LENGTH
    assert CookieCodec(["k1"]).decode(token) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"visitor": VID},
        VID,
        5,
        None,
        [],
        [VID],
        [VID, {}, 0],
        [VID, {}, 2],
        [VID, {}, True],
        [VID, {}, 1.0],
        [VID, {}, "1"],
        [VID, {}, None],
        [VID, {}, [1]],
        [VID, {}, 1, 1],
        [VID, {"hero": 1}, 1],
        ["not-a-uuid", {}, 1],
        ["not-a-uuid", {}],
        [VID + "\n", {}],  # "$" would match before a trailing newline
        [VID.upper(), {}],
        ["6f1c6a38-0d5e-1b8e-9a3e-2b7f0e3c1d2a", {}],  # right shape, wrong UUID version
        [123, {}],
        [None, {}],
        [VID, []],
        [VID, "hero=bold"],
        [VID, None],
        [VID, {"hero": 1}],
        [VID, {"hero": None}],
        [VID, {"hero": ["bold"]}],
        [VID, {"hero": {"v": "bold"}}],
        [VID, {"a": "ok", "b": True}],
    ],
)
def test_wrong_shape_validly_signed(payload: Any) -> None:
    assert CookieCodec(["k1"]).decode(legacy_token("k1", payload)) is None


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\xfd", b"[1,2", b"NaN-ish", b"\x00"])
def test_validly_signed_non_json(raw: bytes) -> None:
    assert CookieCodec(["k1"]).decode(legacy_raw("k1", raw)) is None


def test_validly_signed_non_base64() -> None:
    for body in (b"a", b"!!!!", b"abcde"):  # 1 mod 4 characters cannot be base64
        token = Signer("k1", salt=SALT).sign(body).decode()
        assert CookieCodec(["k1"]).decode(token) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    payload=json_values
    | st.tuples(st.just(VID), json_values).map(list)
    | st.tuples(st.just(VID), assignments_st, st.just(1) | json_values).map(list)
)
def test_validly_signed_arbitrary_json(payload: Any) -> None:
    record = CookieCodec(["k1"]).decode(legacy_token("k1", payload))
    if record is not None:  # only the one right shape is accepted, with or without the mark
        assert isinstance(payload, list) and len(payload) in (2, 3) and payload[0] == VID
        assert isinstance(payload[1], dict)
        assert all(isinstance(v, str) for v in payload[1].values())
        assert dict(record.assignments) == payload[1]
        assert record.stale
        assert record.identify_owed is (len(payload) == 3)
        if record.identify_owed:
            assert type(payload[2]) is int and payload[2] == 1


def test_token_signed_with_another_salt_is_rejected() -> None:
    encoded = base64.urlsafe_b64encode(json.dumps([VID, {}]).encode()).rstrip(b"=")
    token = Signer("k1", salt="something-else").sign(encoded).decode()
    assert CookieCodec(["k1"]).decode(token) is None


# -- through the middleware: the visitor keeps its ID and variant, the cookie moves on -------


def test_a_returning_visitor_with_a_legacy_cookie_is_re_signed_once(tmp_path: Path) -> None:
    key = "legacy-test-key-" + "k" * 32

    async def page(request: Request) -> Response:
        visitor = get_visitor(request)
        return JSONResponse({"id": visitor.id, "hero": visitor.variant("hero")})

    optibase = Optibase(
        tests=[Test(id="hero", variants=[Variant("control"), Variant("bold")])],
        secret_keys=[key],
        events_path=tmp_path / "events.jsonl",
    )
    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(OptibaseMiddleware, optibase=optibase)
    with TestClient(app, headers=dict(AS_A_BROWSER)) as client:
        old = legacy_token(key, [VID, {"hero": "bold"}])
        response = client.get("/", headers={"cookie": f"optibase_vid={old}"})
        assert response.json() == {"id": VID, "hero": "bold"}
        client.cookies.clear()
        set_cookie = [
            v for v in response.headers.get_list("set-cookie") if v.startswith("optibase_vid=")
        ]
        assert len(set_cookie) == 1
        new = set_cookie[0].split(";", 1)[0].split("=", 1)[1]
        assert new.startswith("2.")
        assert CookieCodec([key]).decode(new) == VisitorRecord(VID, {"hero": "bold"})
        again = client.get("/", headers={"cookie": f"optibase_vid={new}"})
        assert again.json() == {"id": VID, "hero": "bold"}
        assert not [v for v in again.headers.get_list("set-cookie") if "optibase_vid=" in v]

"""The visitor cookie: signed token round trip, key rotation, hostile tokens, header handling."""

from __future__ import annotations

import base64
import json
import string
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import Signer

from optibase_edge._cookie import (
    MAX_TOKEN_LENGTH,
    CookieCodec,
    VisitorRecord,
    new_visitor_id,
    read_cookie,
    set_cookie_header,
)

SALT = "optibase-visitor"  # the format: itsdangerous Signer, this salt, base64url JSON payload
VID = "6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a"
COOKIE_SAFE = string.ascii_letters + string.digits + "-_.~=+/!*"

visitor_ids = st.uuids(version=4).map(str)
assignments_st = st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=8)


def sign_payload(key: str, payload: Any) -> str:
    """A token in the library's own format, signed with *key*, for an arbitrary payload."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return sign_raw(key, raw)


def sign_raw(key: str, raw: bytes) -> str:
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=")
    return Signer(key, salt=SALT).sign(encoded).decode("ascii")


def would_fit(visitor_id: str, assignments: dict[str, str], identify_owed: bool = False) -> bool:
    fields: list[Any] = [visitor_id, assignments, *([1] if identify_owed else [])]
    payload = json.dumps(fields, separators=(",", ":")).encode()
    return len(base64.urlsafe_b64encode(payload).rstrip(b"=")) + 1 + 27 <= MAX_TOKEN_LENGTH


# -- round trip ---------------------------------------------------------------------------


def test_new_visitor_id_is_uuid4() -> None:
    ids = {new_visitor_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        assert uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


@settings(max_examples=200, deadline=None)
@given(visitor_id=visitor_ids, assignments=assignments_st, identify_owed=st.booleans())
def test_round_trip(visitor_id: str, assignments: dict[str, str], identify_owed: bool) -> None:
    signing = CookieCodec(["k1"])
    token = signing.encode(visitor_id, assignments, identify_owed)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert token.isascii() and ";" not in token and " " not in token and '"' not in token
    # a codec that did not sign it (no cache) verifies it from scratch
    record = CookieCodec(["k1"]).decode(token)
    assert record is not None
    assert record.visitor_id == visitor_id
    assert not record.stale
    assert record.identify_owed is identify_owed  # the mark survives dropped assignments
    kept = list(record.assignments.items())
    assert kept == list(assignments.items())[: len(kept)]
    if would_fit(visitor_id, assignments, identify_owed):
        assert dict(record.assignments) == assignments
    assert signing.decode(token) == record  # and the signing codec's cache says the same


def test_the_identify_mark_is_a_third_element() -> None:
    owed = CookieCodec(["k1"]).encode(VID, {"hero": "bold"}, identify_owed=True)
    assert CookieCodec(["k1"]).decode(owed) == VisitorRecord(
        VID, {"hero": "bold"}, identify_owed=True
    )
    assert owed == sign_payload("k1", [VID, {"hero": "bold"}, 1])
    # without the mark, the two-element token of every earlier release
    settled = CookieCodec(["k1"]).encode(VID, {"hero": "bold"})
    assert settled == sign_payload("k1", [VID, {"hero": "bold"}])
    assert CookieCodec(["k1"]).decode(settled) == VisitorRecord(VID, {"hero": "bold"})


def test_signing_codec_returns_same_record_from_its_cache() -> None:
    codec = CookieCodec(["k1"])
    token = codec.encode(VID, {"hero": "bold"})
    assert codec.decode(token) == VisitorRecord(VID, {"hero": "bold"})


def test_encode_drops_assignments_to_fit() -> None:
    assignments = {f"test-{i:03d}-" + "t" * 150: f"variant-{i}-" + "v" * 50 for i in range(60)}
    codec = CookieCodec(["k1"])
    token = codec.encode(VID, assignments)
    assert len(token) <= MAX_TOKEN_LENGTH
    record = CookieCodec(["k1"]).decode(token)
    assert record is not None and record.visitor_id == VID
    kept = list(record.assignments.items())
    assert 0 < len(kept) < len(assignments)
    # the newest (last) assignments are the ones dropped
    assert kept == list(assignments.items())[: len(kept)]
    # and it keeps as many as fit: one more would not
    assert not would_fit(VID, dict(list(assignments.items())[: len(kept) + 1]))


def test_encode_with_one_enormous_assignment_keeps_the_visitor() -> None:
    token = CookieCodec(["k1"]).encode(VID, {"t": "x" * 10_000})
    assert len(token) <= MAX_TOKEN_LENGTH
    record = CookieCodec(["k1"]).decode(token)
    assert record == VisitorRecord(VID, {})


# -- key rotation -------------------------------------------------------------------------


def test_key_rotation() -> None:
    old_token = CookieCodec(["old"]).encode(VID, {"hero": "bold"})
    rotated = CookieCodec(["old", "new"])
    record = rotated.decode(old_token)
    assert record is not None
    assert record.stale
    assert (record.visitor_id, dict(record.assignments)) == (VID, {"hero": "bold"})
    # asking again (now cached) still says stale, so every response re-signs until it is
    assert rotated.decode(old_token) == record

    new_token = rotated.encode(record.visitor_id, record.assignments)
    assert new_token != old_token
    assert CookieCodec(["new"]).decode(new_token) == VisitorRecord(VID, {"hero": "bold"})
    assert CookieCodec(["old"]).decode(new_token) is None
    fresh = CookieCodec(["old", "new"]).decode(new_token)
    assert fresh is not None and not fresh.stale

    # once "old" is removed, its tokens are worthless
    assert CookieCodec(["new"]).decode(old_token) is None
    assert CookieCodec(["new", "newer"]).decode(old_token) is None


def test_codec_needs_a_key() -> None:
    with pytest.raises(ValueError):
        CookieCodec([])


# -- hostile tokens -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_token() -> str:
    return CookieCodec(["k1"]).encode(VID, {"hero": "bold", "cta": "green"})


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
        for c in string.ascii_letters + string.digits + "-_"
        if c != good_token[i] and codec.decode(good_token[:i] + c + good_token[i + 1 :]) is not None
    ]
    assert accepted == []


@pytest.mark.parametrize("cut", [1, 2, 5, 27, 28, 40])
def test_truncated(good_token: str, cut: int) -> None:
    codec = CookieCodec(["k1"])
    assert codec.decode(good_token[:-cut]) is None
    assert codec.decode(good_token[cut:]) is None


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "abc", "abc.def", "a" * 100, "%%%.%%%", "null", "\x00", "é.é", "🍪"],
)
def test_garbage(token: str) -> None:
    assert CookieCodec(["k1"]).decode(token) is None


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=200))
def test_arbitrary_text_never_raises(token: str) -> None:
    assert CookieCodec(["k1"]).decode(token) is None


def test_oversized_validly_signed_token() -> None:
    token = sign_payload("k1", [VID, {"t": "x" * MAX_TOKEN_LENGTH}])
    assert len(token) > MAX_TOKEN_LENGTH
    assert CookieCodec(["k1"]).decode(token) is None
    assert CookieCodec(["k1"]).decode("a" * (MAX_TOKEN_LENGTH + 1)) is None


def test_own_format_sanity() -> None:
    # the helper really produces the library's format: a good payload decodes
    token = sign_payload("k1", [VID, {"hero": "bold"}])
    assert CookieCodec(["k1"]).decode(token) == VisitorRecord(VID, {"hero": "bold"})


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
        [str(uuid.uuid1()), {}],  # right shape, wrong UUID version
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
    assert CookieCodec(["k1"]).decode(sign_payload("k1", payload)) is None


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\xfd", b"[1,2", b"NaN-ish", b"\x00"])
def test_validly_signed_non_json(raw: bytes) -> None:
    assert CookieCodec(["k1"]).decode(sign_raw("k1", raw)) is None


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
    record = CookieCodec(["k1"]).decode(sign_payload("k1", payload))
    if record is not None:  # only the one right shape is accepted, with or without the mark
        assert isinstance(payload, list) and len(payload) in (2, 3) and payload[0] == VID
        assert isinstance(payload[1], dict)
        assert all(isinstance(v, str) for v in payload[1].values())
        assert dict(record.assignments) == payload[1]
        assert record.identify_owed is (len(payload) == 3)
        if record.identify_owed:
            assert type(payload[2]) is int and payload[2] == 1


def test_token_signed_with_another_salt_is_rejected() -> None:
    raw = json.dumps([VID, {}]).encode()
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=")
    token = Signer("k1", salt="something-else").sign(encoded).decode()
    assert CookieCodec(["k1"]).decode(token) is None


# -- the Cookie header --------------------------------------------------------------------

NAME = b"optibase_vid"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"cookie", b"optibase_vid=TOKEN")], "TOKEN"),
        ([(b"cookie", b"a=1; optibase_vid=TOKEN; b=2")], "TOKEN"),
        ([(b"cookie", b"a=1;optibase_vid=TOKEN;b=2")], "TOKEN"),
        ([(b"cookie", b"   optibase_vid=TOKEN   ;  a=1")], "TOKEN"),
        ([(b"cookie", b'a=1; optibase_vid="TOKEN"')], "TOKEN"),
        ([(b"cookie", b"xoptibase_vid=EVIL; optibase_vid=GOOD")], "GOOD"),
        ([(b"cookie", b"optibase_vid2=EVIL")], None),
        ([(b"cookie", b"optibase_vidx=EVIL; optibase_vid=GOOD")], "GOOD"),
        ([(b"cookie", b"a=1"), (b"cookie", b"optibase_vid=SECOND")], "SECOND"),
        ([(b"cookie", b"a=\xff\xfe; optibase_vid=TOKEN")], "TOKEN"),
        ([(b"cookie", b"optibase_vid=caf\xc3\xa9")], None),
        ([(b"cookie", b"optibase_vid=\xff")], None),
        ([(b"set-cookie", b"optibase_vid=TOKEN")], None),
        ([(b"x-cookie", b"optibase_vid=TOKEN")], None),
        ([(b"cookie", b"")], None),
        ([(b"cookie", b"optibase_vid")], None),
        ([], None),
    ],
)
def test_read_cookie(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert read_cookie(headers, NAME) == expected


@settings(max_examples=100, deadline=None)
@given(
    others=st.lists(
        st.tuples(
            st.text(alphabet=string.ascii_letters, min_size=1, max_size=8).filter(
                lambda n: n != "optibase_vid"
            ),
            st.text(alphabet=string.ascii_letters + string.digits, max_size=10),
        ),
        max_size=5,
    ),
    position=st.integers(0, 5),
    token=st.text(alphabet=COOKIE_SAFE.replace(";", ""), min_size=1, max_size=60),
)
def test_read_cookie_finds_it_among_others(
    others: list[tuple[str, str]], position: int, token: str
) -> None:
    parts = [f"{n}={v}" for n, v in others]
    parts.insert(min(position, len(parts)), f"optibase_vid={token}")
    header = "; ".join(parts).encode()
    assert read_cookie([(b"cookie", header)], NAME) == token


def test_set_cookie_header_attributes() -> None:
    name, value = set_cookie_header("optibase_vid", "TOK.EN", max_age=1234, secure=False)
    assert name == b"set-cookie"
    text = value.decode("latin-1")
    first, *attrs = [p.strip() for p in text.split(";")]
    assert first == "optibase_vid=TOK.EN"
    lowered = {a.lower() for a in attrs}
    assert {"httponly", "samesite=lax", "path=/", "max-age=1234"} <= lowered
    assert "secure" not in lowered
    _, secure_value = set_cookie_header("optibase_vid", "T", max_age=1, secure=True)
    assert "secure" in {a.strip().lower() for a in secure_value.decode().split(";")[1:]}


def test_set_cookie_header_round_trips_through_read_cookie() -> None:
    token = CookieCodec(["k1"]).encode(VID, {"hero": "bold"})
    _, value = set_cookie_header("optibase_vid", token, max_age=10, secure=True)
    cookie_pair = value.split(b";", 1)[0]
    assert read_cookie([(b"cookie", b"a=b; " + cookie_pair)], NAME) == token

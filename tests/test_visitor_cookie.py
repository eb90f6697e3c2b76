"""The visitor cookie: the format-2 token's round trip, key rotation, hostile tokens, headers.

The first format (itsdangerous base64 JSON), read only, is tested in test_cookie_legacy.py.
"""

from __future__ import annotations

import hmac
import string
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optibase_edge._cookie import (
    MAX_TOKEN_LENGTH,
    CookieCodec,
    VisitorRecord,
    cookie_values,
    new_visitor_id,
    read_cookie,
    set_cookie_header,
)

VID = "6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a"
# RFC 6265 cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
COOKIE_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('",;\\')
COOKIE_SAFE = string.ascii_letters + string.digits + "-_.~=+/!*"

visitor_ids = st.uuids(version=4).map(str)
# Any string at all, lone surrogates included (a Python str may hold one), weighted
# towards the characters the format gives a meaning to.
identifiers = st.text(
    st.characters(codec=None, exclude_categories=()) | st.sampled_from(list('.%!2Ee \\"')),
    max_size=30,
)
assignments_st = st.dictionaries(identifiers, identifiers, max_size=8)


def escaped(identifier: str) -> str:
    """The format's escaping, written out independently of the library's."""
    allowed = COOKIE_OCTETS - {".", "%"}
    return "".join(
        c if c in allowed else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in identifier
    )


def sign_body(secret: str, body: str) -> str:
    """A format-2 token for any body: the format's HMAC through the standard library."""
    key = hmac.digest(secret.encode(), b"optibase-edge visitor token 2", "sha256")
    signature = hmac.new(key, body.encode("utf-8", "surrogatepass"), "sha256").hexdigest()
    return f"{body}.{signature[:32]}"


def body_of(visitor_id: str, assignments: dict[str, str], identify_owed: bool = False) -> str:
    pairs = "".join(f".{escaped(t)}.{escaped(v)}" for t, v in assignments.items())
    return f"2.{visitor_id}{'!' if identify_owed else ''}{pairs}"


def would_fit(visitor_id: str, assignments: dict[str, str], identify_owed: bool = False) -> bool:
    return len(body_of(visitor_id, assignments, identify_owed)) + 1 + 32 <= MAX_TOKEN_LENGTH


# -- round trip ---------------------------------------------------------------------------


def test_new_visitor_id_is_uuid4() -> None:
    ids = {new_visitor_id() for _ in range(400)}
    assert len(ids) == 400
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value
    # Every variant digit occurs: its two low bits are random too.
    assert {value[19] for value in ids} == set("89ab")


@settings(max_examples=300, deadline=None)
@given(visitor_id=visitor_ids, assignments=assignments_st, identify_owed=st.booleans())
def test_round_trip(visitor_id: str, assignments: dict[str, str], identify_owed: bool) -> None:
    signing = CookieCodec(["k1"])
    token = signing.encode(visitor_id, assignments, identify_owed)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert set(token) <= COOKIE_OCTETS
    assert token.startswith("2.")
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
    assert token == sign_body("k1", body_of(visitor_id, dict(kept), identify_owed))
    assert signing.decode(token) == record  # and the signing codec's cache says the same


def test_the_format() -> None:
    codec = CookieCodec(["k1"])
    # common IDs are written as they are: nothing to escape, nothing to pay
    token = codec.encode(VID, {"hero": "bold", "cta": "green"})
    assert token == sign_body("k1", f"2.{VID}.hero.bold.cta.green")
    assert token.rpartition(".")[2] == sign_body("k1", f"2.{VID}.hero.bold.cta.green")[-32:]
    # the identify mark follows the visitor ID
    owed = codec.encode(VID, {"hero": "bold"}, identify_owed=True)
    assert owed == sign_body("k1", f"2.{VID}!.hero.bold")
    assert CookieCodec(["k1"]).decode(owed) == VisitorRecord(
        VID, {"hero": "bold"}, identify_owed=True
    )
    assert codec.encode(VID, {}) == sign_body("k1", f"2.{VID}")
    # ".", "%" and anything not a cookie-octet are percent-encoded, as UTF-8
    odd = {"pricing.v2": "50%", "a b": "café", "": 'x;y,\\"'}
    assert codec.encode(VID, odd) == sign_body(
        "k1", f"2.{VID}.pricing%2Ev2.50%25.a%20b.caf%C3%A9..x%3By%2C%5C%22"
    )
    assert CookieCodec(["k1"]).decode(codec.encode(VID, odd)) == VisitorRecord(VID, odd)


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
    assert codec.decode(token) == record  # what the signing codec remembers: what it wrote


def test_encode_keeps_assignments_that_exactly_fit() -> None:
    room = MAX_TOKEN_LENGTH - len(f"2.{VID}..") - 1 - 32
    exact = {"t": "v" * (room - 1)}
    assert would_fit(VID, exact) and not would_fit(VID, {"t": "v" * room})
    token = CookieCodec(["k1"]).encode(VID, exact)
    assert len(token) == MAX_TOKEN_LENGTH
    assert CookieCodec(["k1"]).decode(token) == VisitorRecord(VID, exact)
    assert CookieCodec(["k1"]).encode(VID, {"t": "v" * room}) == sign_body("k1", f"2.{VID}")
    # and when a newer one must go, the older one that exactly fits stays
    token = CookieCodec(["k1"]).encode(VID, {**exact, "u": "w"})
    assert CookieCodec(["k1"]).decode(token) == VisitorRecord(VID, exact)


def test_encode_with_one_enormous_assignment_keeps_the_visitor() -> None:
    token = CookieCodec(["k1"]).encode(VID, {"t": "x" * 10_000}, identify_owed=True)
    assert len(token) <= MAX_TOKEN_LENGTH
    record = CookieCodec(["k1"]).decode(token)
    assert record == VisitorRecord(VID, {}, identify_owed=True)


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
    # any older key will do, the newest signs
    assert CookieCodec(["old", "new", "newer"]).decode(old_token) == record

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
    return CookieCodec(["k1"]).encode(VID, {"hero": "bold", "cta": "green", "a.b c": "é%"})


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_character_change_is_rejected(good_token: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(good_token) - 1), label="position")
    replacement = data.draw(
        (st.sampled_from(COOKIE_SAFE) | st.characters(codec=None, exclude_categories=())).filter(
            lambda c: c != good_token[position]
        ),
        label="replacement",
    )
    tampered = good_token[:position] + replacement + good_token[position + 1 :]
    assert CookieCodec(["k1"]).decode(tampered) is None
    assert CookieCodec(["k1"]).decode(good_token) is not None


def test_every_single_cookie_octet_change_is_rejected(good_token: str) -> None:
    codec = CookieCodec(["k1"])
    assert codec.decode(good_token) is not None
    accepted = [
        (i, c)
        for i in range(len(good_token))
        for c in sorted(COOKIE_OCTETS)
        if c != good_token[i] and codec.decode(good_token[:i] + c + good_token[i + 1 :]) is not None
    ]
    assert accepted == []


@settings(max_examples=300, deadline=None)
@given(
    visitor_id=visitor_ids,
    assignments=assignments_st,
    identify_owed=st.booleans(),
    data=st.data(),
)
def test_no_altered_token_verifies(
    visitor_id: str,
    assignments: dict[str, str],
    identify_owed: bool,
    data: st.DataObject,
) -> None:
    """Replaced, inserted or deleted characters, a cut or an addition at either end: None."""
    token = CookieCodec(["k1"]).encode(visitor_id, assignments, identify_owed)
    i = data.draw(st.integers(0, len(token)), label="at")
    text = data.draw(st.text(COOKIE_SAFE + "%", min_size=1, max_size=3), label="text")
    altered = data.draw(
        st.sampled_from(
            [
                token[:i] + text + token[i + 1 :],  # replaced
                token[:i] + text + token[i:],  # inserted
                token[:i] + token[i + 1 :],  # deleted
                token[:i],
                token[i:],
                token + text,
                text + token,
            ]
        ),
        label="altered",
    )
    record = CookieCodec(["k1"]).decode(altered)
    assert record is None or altered == token
    assert CookieCodec(["k1"]).decode(token) is not None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "2.",
        "2..",
        "abc",
        "abc.def",
        "a" * 100,
        "%%%.%%%",
        "null",
        "\x00",
        "é.é",
        "🍪",
        f"2.{VID}",
        f"2.{VID}.",
        f"2.{VID}." + "0" * 32,
        "2.\ud800." + "0" * 32,
        f"2.{VID}.hero.bold.café",  # a good body, a signature compare_digest cannot take
    ],
)
def test_garbage(token: str) -> None:
    assert CookieCodec(["k1"]).decode(token) is None


@settings(max_examples=300, deadline=None)
@given(
    token=st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
    | st.text(COOKIE_SAFE + "%!", max_size=120).map(lambda s: f"2.{VID}{s}")
    | st.text(max_size=80).map(lambda s: "2." + s)
)
def test_arbitrary_text_never_raises(token: str) -> None:
    assert CookieCodec(["k1", "k2"]).decode(token) is None


def test_oversized_validly_signed_token() -> None:
    token = sign_body("k1", f"2.{VID}.t." + "x" * MAX_TOKEN_LENGTH)
    assert len(token) > MAX_TOKEN_LENGTH
    assert CookieCodec(["k1"]).decode(token) is None
    assert CookieCodec(["k1"]).decode("a" * (MAX_TOKEN_LENGTH + 1)) is None


def test_own_format_sanity() -> None:
    # the helper really produces the library's format: a good body decodes
    token = sign_body("k1", f"2.{VID}.hero.bold")
    assert CookieCodec(["k1"]).decode(token) == VisitorRecord(VID, {"hero": "bold"})


@pytest.mark.parametrize(
    "body",
    [
        "2.",
        f"2.{VID}.hero",  # a test without its variant
        f"2.{VID}.hero.bold.cta",
        f"2.{VID}.hero.bold.hero.bold",  # a test twice
        f"2.{VID}.hero.bold.her%6F.bold",  # the same test, spelt differently
        f"2.{VID}!!.hero.bold",
        f"2.{VID}?.hero.bold",
        f"2.{VID.upper()}.hero.bold",
        f"2.{VID.replace('-', '')}.hero.bold",
        f"2.{uuid.uuid1()}.hero.bold",  # right shape, wrong UUID version
        f"2.{VID[:19]}7{VID[20:]}.hero.bold",  # not the RFC 4122 variant
        f"2.{VID}\n.hero.bold",
        f"3.{VID}.hero.bold",
        f"2.{VID}.her%6f.bold",  # not upper-case hex
        f"2.{VID}.hero.b%6Fld",  # "o" needs no escape
        f"2.{VID}.a%2eb.bold",
        f"2.{VID}.a%zzb.bold",
        f"2.{VID}.a%.bold",
        f"2.{VID}.a%C3.bold",  # half a UTF-8 sequence
        f"2.{VID}.a%C0%AE.bold",  # an overlong "."
        f"2.{VID}.a b.bold",  # not a cookie-octet
        f"2.{VID}.a,b.bold",
        f"2.{VID}.a;b.bold",
        f'2.{VID}.a"b.bold',
        f"2.{VID}.a\\b.bold",
        f"2.{VID}.café.bold",
        f"2.{VID}.hero.bold ",
    ],
)
def test_malformed_validly_signed(body: str) -> None:
    assert CookieCodec(["k1"]).decode(sign_body("k1", body)) is None


@settings(max_examples=500, deadline=None)
@given(
    mark=st.sampled_from(["", "!", "?"]),
    rest=st.lists(
        st.sampled_from([*".%!2EeCcA3a9F ,é", "%2E", "%25", "%C3%A9", ".hero", ".bold"]),
        max_size=12,
    ).map("".join),
)
def test_validly_signed_arbitrary_body(mark: str, rest: str) -> None:
    """Whatever a key holder signs, a record comes back only for what encode writes."""
    token = sign_body("k1", f"2.{VID}{mark}{rest}")
    record = CookieCodec(["k1"]).decode(token)
    if record is not None:
        again = CookieCodec(["k1"]).encode(
            record.visitor_id, record.assignments, record.identify_owed
        )
        assert again == token


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


def reference_cookie_values(
    headers: list[tuple[bytes, bytes]], name: bytes, first_only: bool = False
) -> list[str]:
    """The plain reading: split on ";", strip, match the name, unquote, skip non-ASCII."""
    found = []
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part.startswith(name + b"="):
                try:
                    found.append(part[len(name) + 1 :].decode("ascii").strip('"'))
                except UnicodeDecodeError:
                    continue
                if first_only:
                    return found
    return found


# Pieces a Cookie header is made of, weighted towards the ones a scan can get wrong.
header_pieces = st.sampled_from(
    [
        b"optibase_vid",
        b"xoptibase_vid",
        b"optibase_vid2",
        b"optibase_vi",
        b"OPTIBASE_VID",
        b"=",
        b";",
        b"; ",
        b" ",
        b"\t",
        b"\x0b",
        b'"',
        b"a",
        b"\xc3\xa9",
        b"\xff",
        b"\x00",
        b"2.",
        b"TOKEN",
        b"optibase_vid=",
    ]
)
cookie_header_values = st.lists(header_pieces, max_size=14).map(b"".join)
header_lists = st.lists(
    st.tuples(st.sampled_from([b"cookie", b"cookie", b"set-cookie", b"x"]), cookie_header_values),
    max_size=4,
)


@settings(max_examples=1000, deadline=None)
@given(headers=header_lists, first_only=st.booleans())
def test_cookie_values_reads_as_splitting_does(
    headers: list[tuple[bytes, bytes]], first_only: bool
) -> None:
    expected = reference_cookie_values(headers, NAME, first_only)
    assert cookie_values(headers, NAME, first_only=first_only) == expected
    assert read_cookie(headers, NAME) == (expected[0] if expected else None)

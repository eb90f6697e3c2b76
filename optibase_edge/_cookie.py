"""The visitor cookie: an anonymous ID and sticky assignments, signed.

The token is URL-safe base64 JSON ``[visitor_id, {test_id: variant_id}]`` with an
``itsdangerous`` HMAC signature; a third element, ``1``, marks a visitor whose
first Identify could not be queued yet (the buffer was full), so that the next
request sends it.
It is verified with any of the configured keys and signed with the newest, so
keys can rotate; a token signed with an older key is marked stale and re-signed
on the next response. Verifying costs far more than a request should, so tokens
already verified are remembered in a bounded LRU.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from itsdangerous import BadData, BadSignature, Signer
from itsdangerous.encoding import base64_decode, base64_encode
from itsdangerous.signer import HMACAlgorithm

# Browsers keep at least 4096 bytes per cookie, name and attributes included.
MAX_TOKEN_LENGTH = 3800
_SALT = "optibase-visitor"
# json.dumps(obj, separators=...) builds a new encoder on every call; this one is reused.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


@dataclass(frozen=True, slots=True)
class VisitorRecord:
    """What a valid token says; ``stale`` when it was signed with an older key.

    ``identify_owed``: the visitor's first Identify has not been queued yet.
    """

    visitor_id: str
    assignments: Mapping[str, str]
    stale: bool = False
    identify_owed: bool = False


def new_visitor_id() -> str:
    """A random UUID4 string, formatted directly (``str(uuid.uuid4())`` costs 3x more)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _KeyCachingSigner(Signer):
    """A Signer that derives each key once rather than on every sign and verify."""

    _derived: ClassVar[dict[tuple[bytes, bytes], bytes]] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        raw = self.secret_keys[-1] if secret_key is None else secret_key
        raw = raw.encode() if isinstance(raw, str) else raw
        cache_key = (raw, self.salt)
        derived = self._derived.get(cache_key)
        if derived is None:
            derived = self._derived[cache_key] = super().derive_key(raw)
        return derived


class _OneShotHMAC(HMACAlgorithm):
    """HMAC-SHA1, as itsdangerous signs by default, through the C one-shot function."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha1")


class CookieCodec:
    """Signs and verifies visitor tokens, caching verified ones."""

    def __init__(self, secret_keys: Sequence[str], cache_size: int = 65_536) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self._signer = _KeyCachingSigner(secret_keys[-1], salt=_SALT, algorithm=_OneShotHMAC())
        self._any_key = (
            _KeyCachingSigner(list(secret_keys), salt=_SALT, algorithm=_OneShotHMAC())
            if len(secret_keys) > 1
            else None
        )
        # An OrderedDict, not a cachetools LRU: its C moves and evictions keep both a
        # hit and an insert-with-eviction well under a microsecond.
        self._verified: OrderedDict[str, VisitorRecord] = OrderedDict()
        self._cache_size = cache_size

    def decode(self, token: str) -> VisitorRecord | None:
        """The record a token carries, or None for anything not valid and ours."""
        record = self._verified.get(token)
        if record is not None:
            self._verified.move_to_end(token)
            return record
        if len(token) > MAX_TOKEN_LENGTH or not _canonical_signature(token):
            return None
        stale = False
        try:
            signed = self._signer.unsign(token)
        except BadSignature:
            if self._any_key is None:
                return None
            try:
                signed = self._any_key.unsign(token)
            except BadSignature:
                return None
            stale = True
        try:
            payload = json.loads(base64.urlsafe_b64decode(signed + b"=" * (-len(signed) % 4)))
        except (binascii.Error, ValueError):
            return None
        record = _record_from_payload(payload, stale)
        if record is not None:
            self._remember(token, record)
        return record

    def encode(
        self, visitor_id: str, assignments: Mapping[str, str], identify_owed: bool = False
    ) -> str:
        """Sign a token, dropping the newest assignments if it would not fit a cookie."""
        items = list(assignments.items())
        while True:
            fields: list[object] = [visitor_id, dict(items)]
            if identify_owed:
                fields.append(1)
            payload = _COMPACT_JSON.encode(fields).encode()
            encoded = base64.urlsafe_b64encode(payload).rstrip(b"=")
            token = self._signer.sign(encoded).decode("ascii")
            if len(token) <= MAX_TOKEN_LENGTH or not items:
                break
            items.pop()
        self._remember(token, VisitorRecord(visitor_id, dict(items), identify_owed=identify_owed))
        return token

    def _remember(self, token: str, record: VisitorRecord) -> None:
        self._verified[token] = record
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)


def _canonical_signature(token: str) -> bool:
    """The signature's base64 is exactly as we write it.

    The last character of an unpadded base64 signature carries spare bits, so
    several spellings decode to the same bytes; accept only ours, so that no
    altered token verifies.
    """
    signature = token.rpartition(".")[2].encode("ascii", "replace")
    try:
        return base64_encode(base64_decode(signature)) == signature
    except BadData:
        return False


def _record_from_payload(payload: object, stale: bool) -> VisitorRecord | None:
    if not isinstance(payload, list) or len(payload) not in (2, 3):
        return None
    if len(payload) == 3 and (type(payload[2]) is not int or payload[2] != 1):
        return None  # the mark is 1 exactly: not true, 1.0 or anything else
    visitor_id, assignments = payload[0], payload[1]
    if not isinstance(visitor_id, str) or not _UUID.match(visitor_id):
        return None
    if not isinstance(assignments, dict):
        return None
    if not all(isinstance(variant_id, str) for variant_id in assignments.values()):
        return None
    return VisitorRecord(visitor_id, assignments, stale, len(payload) == 3)


def read_cookie(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of cookie *name* in raw ASGI headers, or None.

    A hand-rolled scan: parsing every cookie into a dict costs more than the
    whole returning-visitor path is allowed to.
    """
    values = cookie_values(headers, name, first_only=True)
    return values[0] if values else None


def cookie_values(
    headers: Sequence[tuple[bytes, bytes]], name: bytes, *, first_only: bool = False
) -> list[str]:
    """Every value of cookie *name*, in order (or the first only).

    A browser sends several when cookies of one name were set for different
    paths or domains (or another site on the domain planted one): the one that
    verifies may not come first. A list, not a generator: on every request,
    a generator's setup costs more than the scan.
    """
    prefix = name + b"="
    found: list[str] = []
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part.startswith(prefix):
                try:
                    found.append(part[len(prefix) :].decode("ascii").strip('"'))
                except UnicodeDecodeError:
                    continue
                if first_only:
                    return found
    return found


def set_cookie_header(
    name: str, value: str, *, max_age: int | None, secure: bool
) -> tuple[bytes, bytes]:
    """One of this library's cookies: HttpOnly, SameSite=Lax, Path=/.

    ``max_age=None`` makes a session cookie (it ends with the browser session).
    """
    header = f"{name}={value}"
    if max_age is not None:
        header += f"; Max-Age={max_age}"
    header += "; Path=/; HttpOnly; SameSite=Lax"
    if secure:
        header += "; Secure"
    return (b"set-cookie", header.encode("latin-1"))


def is_secure(cookie_secure: bool | None, scheme: str) -> bool:
    """Whether a cookie gets ``Secure``: as configured, else when *scheme* is https."""
    return scheme == "https" if cookie_secure is None else cookie_secure

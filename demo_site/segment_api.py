"""The sink's Segment-compatible HTTP Tracking API: ``POST /v1/batch``, ``/v1/track``, ...

Mirrors Segment's ingestion: JSON bodies, optionally ``Content-Encoding:
gzip``, at most 500 KB per request after decompression; the write key comes as
the HTTP Basic user name (empty password) or as ``writeKey`` in the body.
Unlike Segment, a wrong or missing write key (when one is configured) is a
401, and an invalid request a 400 (see :mod:`demo_site.segment_messages`).

Also unlike Segment, a body must be declared ``application/json`` (else 415),
as this library's delivery and Segment's server libraries declare it. Segment
also takes the ``text/plain`` its browser library sends, but any web page may
post that type anywhere, from a form or a fetch, with no CORS preflight to ask
leave; the demo's write key is no secret, so a page could fill the results.
A page's ``application/json`` post waits for a preflight the sink never grants.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import zlib
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from demo_site.call_store import CallStore
from demo_site.json_responses import (
    JSONValue,
    RequestError,
    bad_request,
    json_response,
)
from demo_site.segment_messages import CALL_TYPES, rows_from_payload

MAX_REQUEST_BYTES: Final = 500 * 1024
"""Largest accepted request body, measured after decompression."""
MAX_WIRE_BYTES: Final = MAX_REQUEST_BYTES + 64 * 1024
"""Largest body read off the wire (gzip of incompressible data can grow a little)."""


# --------------------------------------------------------------------------- decoding


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WIRE_BYTES:
        raise bad_request("request body too large (limit 500 KB)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WIRE_BYTES:
            raise bad_request("request body too large (limit 500 KB)")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one or more gzip members, refusing more than *limit* bytes of output."""
    out = bytearray()
    while True:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += decompressor.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise bad_request(f"malformed gzip body: {exc}") from None
        if len(out) > limit:
            raise bad_request("request body too large after decompression (limit 500 KB)")
        if not decompressor.eof:
            raise bad_request("malformed gzip body: truncated stream")
        data = decompressor.unused_data
        if not data.strip(b"\x00"):  # trailing zero padding is tolerated, like gzip(1)
            return bytes(out)


def _decode_body(raw: bytes, content_encoding: str) -> bytes:
    encodings = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
    if encodings in ([], ["identity"]):
        body = raw
    elif encodings in (["gzip"], ["x-gzip"]):
        body = _gunzip(raw, MAX_REQUEST_BYTES)
    else:
        raise bad_request(f"unsupported Content-Encoding: {content_encoding!r}")
    if len(body) > MAX_REQUEST_BYTES:
        raise bad_request("request body too large (limit 500 KB)")
    return body


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _require_json(content_type: str) -> None:
    media_type = content_type.partition(";")[0].strip().lower()  # parameters (charset) aside
    if media_type != "application/json":
        raise RequestError(415, "Content-Type must be application/json")


def _parse_json(body: bytes) -> dict[str, JSONValue]:
    try:
        payload = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise bad_request("invalid JSON: the body must be an object")
    return payload


# --------------------------------------------------------------------------- auth


def _basic_username(header: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header, else None."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, _, _password = decoded.partition(":")
    return username


def _same_key(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")
    )


# --------------------------------------------------------------------------- routes


def segment_routes(store: CallStore, write_key: str | None) -> list[Route]:
    """``POST /v1/batch`` and ``/v1/<type>`` for every call type, storing into *store*.

    A request is stored whole or not at all; success is ``{"success": true}``.
    With *write_key* None, any key (or none) is accepted.
    """

    async def ingest(request: Request, call_type: str) -> Response:
        _require_json(request.headers.get("content-type", ""))
        header_key: str | None = None
        authorization = request.headers.get("authorization")
        if authorization is not None:
            header_key = _basic_username(authorization)
        if (
            write_key is not None
            and header_key is not None
            and not _same_key(header_key, write_key)
        ):
            raise RequestError(401, "invalid write key")
        raw = await _read_body(request)
        body = _decode_body(raw, request.headers.get("content-encoding", ""))
        payload = _parse_json(body)
        if (
            write_key is not None
            and header_key is None
            and not _same_key(payload.get("writeKey"), write_key)
        ):
            raise RequestError(401, "missing or invalid write key")
        rows = rows_from_payload(payload, call_type)
        await run_in_threadpool(store.insert, rows)
        return json_response({"success": True})

    def endpoint(call_type: str) -> Route:
        async def handle(request: Request) -> Response:
            return await ingest(request, call_type)

        handle.__name__ = f"ingest_{call_type}"
        return Route(f"/v1/{call_type}", handle, methods=["POST"], name=f"v1_{call_type}")

    return [endpoint(t) for t in ("batch", *sorted(CALL_TYPES))]

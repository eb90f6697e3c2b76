"""JSON bodies and request errors shared by the sink's endpoints.

Every JSON answer is compact, ASCII-only and uncacheable; an error is
``{"success": false, "error": <message>}`` with its HTTP status.
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.responses import Response

JSONValue = Any
"""A value decoded by :mod:`json` (dict, list, str, int, float, bool or None)."""

NO_STORE_HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
"""On every answer of the sink's own: what it shows changes with each call it stores."""


class RequestError(Exception):
    """Ends a request with *status* and a JSON error body (see :func:`error_response`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> RequestError:
    """A 400 :class:`RequestError`; callers ``raise`` it."""
    return RequestError(400, message)


def compact_json(value: JSONValue) -> str:
    """*value* as JSON without spaces, every non-ASCII character escaped."""
    # ASCII escapes keep the text valid UTF-8 even if *value* holds lone
    # surrogates (legal as JSON escapes, not encodable as UTF-8).
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def json_response(data: JSONValue, status: int = 200, **headers: str) -> Response:
    """*data* as an uncacheable JSON response; *headers* are added to the defaults."""
    return Response(
        compact_json(data),
        status_code=status,
        media_type="application/json",
        headers={**NO_STORE_HEADERS, **headers},
    )


def error_response(error: RequestError) -> Response:
    """The JSON answer for *error*; a 401 also names the Basic realm, as HTTP requires."""
    extra = {"WWW-Authenticate": 'Basic realm="segment-sink"'} if error.status == 401 else {}
    return json_response({"success": False, "error": error.message}, error.status, **extra)

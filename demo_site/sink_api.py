"""The sink's own JSON API: the stored calls, the experiment results, and a reset.

``GET /api/calls?after=<id>&limit=<n>`` lists calls oldest first (what the
dashboard's live feed polls); ``GET /api/results`` is the report document of
``optibase-edge report --json`` (``Results.to_json()``) for the stored calls;
``DELETE /api/calls`` or ``POST /api/reset`` deletes every call.
"""

from __future__ import annotations

from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from demo_site.json_responses import bad_request, json_response
from demo_site.sink_results import StoredResults

DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000


def _query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be between {lo} and {hi}")
    return value


def sink_api_routes(results: StoredResults) -> list[Route]:
    """The routes ``calls``, ``results`` and ``reset``, reading and clearing ``results.store``."""
    store = results.store

    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            return await reset(request)
        after = _query_int(request, "after", 0, -1, 2**63 - 1)
        limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        return json_response(await run_in_threadpool(store.calls_after, after, limit))

    async def report(request: Request) -> Response:
        computed = await run_in_threadpool(results.compute)
        return json_response(computed.to_json())

    async def reset(request: Request) -> Response:
        deleted = await run_in_threadpool(store.clear)
        return json_response({"success": True, "deleted": deleted})

    return [
        Route("/api/calls", calls, methods=["GET", "DELETE"], name="calls"),
        Route("/api/results", report, methods=["GET"], name="results"),
        Route("/api/reset", reset, methods=["POST"], name="reset"),
    ]

"""A local, Segment-compatible sink with a results dashboard.

The demo points the library's Segment delivery at this app instead of
``https://api.segment.io``, so the whole loop (assignment, Experiment Viewed,
Conversion Triggered, results) works without a Segment account::

    app = create_sink_app("sink.sqlite3", write_key="demo", tests=..., conversions=...)

The app assembles:

* :mod:`demo_site.segment_api`: ingestion, ``POST /v1/batch``, ``/v1/track``,
  ``/v1/identify``, ``/v1/page`` and friends, strict where Segment is lenient;
* :mod:`demo_site.call_store`: every received message as a row in SQLite;
* :mod:`demo_site.sink_results`: the results, by
  :func:`optibase_edge.experiment_results` and nothing else;
* :mod:`demo_site.sink_api`: ``GET /api/calls``, ``GET /api/results``,
  ``DELETE /api/calls`` / ``POST /api/reset``;
* :mod:`demo_site.dashboard`: ``GET /`` and its live results fragment,
  ``GET /results``, with its CSS and JS under ``/static/``;
* :mod:`demo_site.allowed_hosts` and :mod:`demo_site.same_origin`: what keeps
  web pages out, since the stored calls hold visitors' IPs and user agents and
  anyone who reaches the sink may reset it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from demo_site.allowed_hosts import AllowedHostsMiddleware, exposure_warning
from demo_site.call_store import CallStore
from demo_site.dashboard import dashboard_routes
from demo_site.json_responses import RequestError, error_response
from demo_site.same_origin import SameOriginWritesMiddleware
from demo_site.segment_api import segment_routes
from demo_site.sink_api import sink_api_routes
from demo_site.sink_results import StoredResults
from optibase_edge import ConfigError, Conversion, Test
from optibase_edge._toml import read_toml

STATIC_DIR: Final = Path(__file__).with_name("static")
"""The dashboard's stylesheet and script, found beside this file in a checkout."""


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)  # the only class it is registered for
    return error_response(exc)


def create_sink_app(
    db_path: str,
    *,
    write_key: str | None = None,
    allowed_hosts: Iterable[str] = (),
    tests: Sequence[Test] = (),
    conversions: Sequence[Conversion] = (),
) -> Starlette:
    """A Starlette app that accepts Segment HTTP API calls and shows the experiments' results.

    *db_path* is an SQLite file (``":memory:"`` works for tests).  When
    *write_key* is set, requests must carry it (HTTP Basic user name with an
    empty password, or ``writeKey`` in the body), else they get 401.  The
    store is ``app.state.sink_store``.

    *tests* and *conversions* are the site's (``settings.tests`` and
    ``settings.conversions``): the results take names, each test's control and
    weights, and the order from them.

    Requests must name a loopback host or one of *allowed_hosts* in ``Host``
    (else 400), and a page of another origin may change nothing (403).
    """
    store = CallStore(db_path)
    results = StoredResults(store, tuple(tests), tuple(conversions))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()  # reopened lazily if the app is started again

    app = Starlette(
        routes=[
            *dashboard_routes(results),
            *segment_routes(store, write_key),
            *sink_api_routes(results),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(AllowedHostsMiddleware, hosts=list(allowed_hosts)),
            Middleware(SameOriginWritesMiddleware),
        ],
        lifespan=lifespan,
        # A request the sink refuses, from any route: a JSON error with its status.
        exception_handlers={RequestError: _refused},
    )
    app.state.sink_store = store
    return app


def _read_configuration(path: str) -> tuple[list[Test], list[Conversion]]:
    """The tests and conversions of the ``optibase.toml`` at *path*.

    Raises SystemExit with a message naming the file when it cannot be used.
    """
    try:
        settings = read_toml(path)
    except ConfigError as error:
        raise SystemExit(f"demo_site.sink: --config {path}: {error}") from None
    return settings["tests"], settings["conversions"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sink on its own: ``python -m demo_site.sink [--config optibase.toml]``."""
    import argparse
    import sys

    import uvicorn

    parser = argparse.ArgumentParser(description="Local Segment-compatible sink and dashboard.")
    parser.add_argument("--db", default="segment-sink.sqlite3", help="SQLite file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--write-key", default=None, help="require this write key")
    parser.add_argument(
        "--config",
        metavar="optibase.toml",
        help="the site's configuration: names, controls, weights and order of the results",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="answer this Host name too (besides loopback ones and --host); repeatable",
    )
    args = parser.parse_args(argv)
    tests, conversions = _read_configuration(args.config) if args.config else ([], [])
    if warning := exposure_warning(args.host):
        print(f"demo_site.sink: {warning}", file=sys.stderr, flush=True)
    app = create_sink_app(
        args.db,
        write_key=args.write_key,
        allowed_hosts=[args.host, *args.allow_host],
        tests=tests,
        conversions=conversions,
    )
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()

"""``python -m demo_site``: the demo site, the edge, and a local Segment sink, on 127.0.0.1.

No account and no configuration: the site's Segment delivery points at the
sink running in the same process (write key ``demo``), whose dashboard shows
the results as they arrive. Beside the site runs the edge: a Webflow-like
landing page from a server of its own, served through ``ReverseProxy`` behind
the middleware, reporting to the same sink. Ctrl-C stops the site and the edge
first (their lifespan shutdown flushes the delivery queues into the sink), then
the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from demo_site.allowed_hosts import exposure_warning
from demo_site.app import create_demo_app
from demo_site.landing import create_edge_app, create_landing_origin
from demo_site.sink import create_sink_app

WRITE_KEY = "demo"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 15.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us: two servers share one loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None


def _bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
    # without it every response on a kept-alive connection waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        flag = {"site": "--port", "sink": "--sink-port", "edge": "--edge-port"}.get(what, "--host")
        raise SystemExit(
            f"demo_site: cannot listen on {host}:{port} for the {what}: {exc.strerror}"
            f" (choose another port with {flag})"
        ) from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(args: argparse.Namespace, db_path: str) -> int:
    host = args.host
    sink_sock = _bind(host, args.sink_port, "sink")
    site_sock = _bind(host, args.port, "site")
    edge_sock = _bind(host, args.edge_port, "edge")
    # The landing page's origin is the edge's business alone: any free loopback port.
    origin_sock = _bind(LOOPBACK, 0, "origin")
    sink_url = _url(host, sink_sock.getsockname()[1])
    site_url = _url(host, site_sock.getsockname()[1])
    edge_url = _url(host, edge_sock.getsockname()[1])
    origin_url = _url(LOOPBACK, origin_sock.getsockname()[1])

    secret_keys = [k for k in os.environ.get("OPTIBASE_SECRET_KEYS", "").split(",") if k.strip()]
    # Ephemeral unless given: visitors start afresh after a restart. The site and the
    # edge share them: on one host name, a visitor is the same one on both.
    secret_keys = secret_keys or [secrets.token_hex(32)]
    site_app = create_demo_app(
        segment_endpoint=sink_url,
        write_key=WRITE_KEY,
        secret_keys=secret_keys,
        dashboard_url=sink_url + "/",
        flush_interval=args.flush_interval,
    )
    edge_app = create_edge_app(
        origin_url, segment_endpoint=sink_url, write_key=WRITE_KEY, secret_keys=secret_keys
    )
    settings = site_app.state.optibase.settings
    sink_app = create_sink_app(
        db_path,
        write_key=WRITE_KEY,
        # The address itself too: the site's delivery and the dashboard link name it.
        allowed_hosts=[host, *args.allow_host],
        tests=settings.tests,  # the dashboard names, orders and checks what the site runs
        conversions=settings.conversions,
    )
    level = "info" if args.verbose else "warning"

    def server(app: ASGIApp, access_log: bool = False) -> _Server:
        return _Server(
            uvicorn.Config(app, log_level=level, access_log=access_log, timeout_graceful_shutdown=3)
        )

    sink = server(sink_app)
    site = server(site_app, access_log=args.verbose)
    edge = server(edge_app, access_log=args.verbose)
    origin = server(create_landing_origin())
    # Stopped in this order: the site and the edge first, as their lifespan shutdown
    # flushes queued events into the sink; the sink last.
    running = {site: site_sock, edge: edge_sock, origin: origin_sock, sink: sink_sock}

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: do not wait for open connections
            for each in running:
                each.force_exit = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # e.g. Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(on_signal))

    tasks = {
        each: asyncio.create_task(each.serve(sockets=[sock])) for each, sock in running.items()
    }
    started = False
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not (started := all(each.started for each in running)):
                if any(task.done() for task in tasks.values()):
                    break
                await asyncio.sleep(0.02)
    except TimeoutError:
        print("demo_site: the servers did not start in time", file=sys.stderr)
    if started:
        print(
            "optibase-edge demo (Paperplane)\n"
            f"  site:       {site_url}/\n"
            f"  edge:       {edge_url}/  (a Webflow-like page, its variant blocks"
            " resolved by the edge)\n"
            f"  dashboard:  {sink_url}/\n"
            f"  Segment API {sink_url}/v1/batch (write key {WRITE_KEY!r}), data in {db_path}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({stopper, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    failed = not stop.is_set()  # a server ended on its own, or they did not all start

    for each, sock in running.items():
        each.should_exit = True
        with contextlib.suppress(Exception):
            await tasks[each]
        sock.close()
    stats = [site_app.state.optibase.stats(), edge_app.optibase.stats()]
    sent, pending = sum(s["sent"] for s in stats), sum(s["pending"] for s in stats)
    lost = sum(s["failed"] + s["dropped"] for s in stats)
    print(
        f"stopped: {sent} events delivered to the sink, {pending} pending, {lost} lost",
        flush=True,
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo_site",
        description="Run the optibase-edge demo site and a local Segment sink with a dashboard.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address for both (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="site port (default: %(default)s)")
    parser.add_argument(
        "--sink-port", type=int, default=8001, help="sink and dashboard port (default: %(default)s)"
    )
    parser.add_argument(
        "--edge-port",
        type=int,
        default=8002,
        help="port of the edge in front of the landing page (default: %(default)s)",
    )
    parser.add_argument(
        "--db", default=None, help="SQLite file for the sink (default: a temporary one)"
    )
    parser.add_argument(
        "--flush-interval", type=float, default=0.2, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="let the sink answer this Host name too (besides loopback ones and --host);"
        " repeatable",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="uvicorn info + access logs")
    args = parser.parse_args(argv)
    if warning := exposure_warning(args.host):
        print(f"demo_site: {warning}", file=sys.stderr, flush=True)
    if args.db:
        return asyncio.run(_serve(args, str(Path(args.db).resolve())))
    with tempfile.TemporaryDirectory(prefix="optibase-demo-") as tmp:
        return asyncio.run(_serve(args, str(Path(tmp) / "sink.sqlite3")))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m demo_site``: the demo site and its local Segment sink, on 127.0.0.1.

No account and no configuration: the site's Segment delivery points at the
sink running in the same process (write key ``demo``), whose dashboard shows
the results as they arrive. Ctrl-C stops the site first (its lifespan shutdown
flushes the delivery queue into the sink), then the sink.
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

from demo_site.allowed_hosts import exposure_warning
from demo_site.app import create_demo_app
from demo_site.sink import create_sink_app

WRITE_KEY = "demo"
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
        flag = "--port" if what == "site" else "--sink-port"
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
    sink_url = _url(host, sink_sock.getsockname()[1])
    site_url = _url(host, site_sock.getsockname()[1])

    secret_keys = [k for k in os.environ.get("OPTIBASE_SECRET_KEYS", "").split(",") if k.strip()]
    site_app = create_demo_app(
        segment_endpoint=sink_url,
        write_key=WRITE_KEY,
        # Ephemeral unless given: visitors start afresh after a restart.
        secret_keys=secret_keys or [secrets.token_hex(32)],
        dashboard_url=sink_url + "/",
        flush_interval=args.flush_interval,
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
    sink = _Server(
        uvicorn.Config(sink_app, log_level=level, access_log=False, timeout_graceful_shutdown=3)
    )
    site = _Server(
        uvicorn.Config(
            site_app, log_level=level, access_log=args.verbose, timeout_graceful_shutdown=3
        )
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: do not wait for open connections
            site.force_exit = sink.force_exit = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # e.g. Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(on_signal))

    sink_task = asyncio.create_task(sink.serve(sockets=[sink_sock]), name="sink")
    site_task = asyncio.create_task(site.serve(sockets=[site_sock]), name="site")
    tasks = {sink_task, site_task}
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not (sink.started and site.started):
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.02)
    except TimeoutError:
        print("demo_site: the servers did not start in time", file=sys.stderr)
        stop.set()
    if sink.started and site.started:
        print(
            "optibase-edge demo (Paperplane)\n"
            f"  site:       {site_url}/\n"
            f"  dashboard:  {sink_url}/\n"
            f"  Segment API {sink_url}/v1/batch (write key {WRITE_KEY!r}), data in {db_path}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
    else:
        stop.set()

    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    failed = not stop.is_set()  # a server ended on its own

    # The site first: its lifespan shutdown flushes queued events into the sink.
    site.should_exit = True
    with contextlib.suppress(Exception):
        await site_task
    sink.should_exit = True
    with contextlib.suppress(Exception):
        await sink_task
    for sock in (site_sock, sink_sock):
        sock.close()
    stats = site_app.state.optibase.stats()
    print(
        f"stopped: {stats['sent']} events delivered to the sink, {stats['pending']} pending, "
        f"{stats['failed'] + stats['dropped']} lost",
        flush=True,
    )
    return 1 if failed or not (sink.started and site.started) else 0


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

"""Profile one benchmark scenario, to find where the library's time goes.

Run a scenario in a bounded loop (by time and by count), under py-spy::

    py-spy record -r 2000 -f raw -o /tmp/returning.txt -- \\
        .venv/bin/python -m benchmarks.profile_hotspots returning --seconds 8
    .venv/bin/python -m benchmarks.profile_hotspots summarize /tmp/returning.txt

or with cProfile (``--cprofile``; call counts are exact, times are inflated for
small functions). Scenarios: ``returning``, ``new`` (request path, the queue
drained untimed between batches), ``drain`` (the background encode+send of
new-visitor events), ``convert`` (a view's ``await visitor.convert()``),
``choose``, ``components`` (micro-timings of the returning-visitor path's
parts, no profiler needed), and ``server PATH`` (py-spy attached to the wrapped
uvicorn site while wrk loads it; summarize with ``--within "run ("``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import os
import pstats
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

from .apps import PAGE, bench_optibase, wrapped_site
from .bench_middleware import (
    OTHER_COOKIES,
    discard,
    first_response,
    make_scope,
    receive,
    set_cookie_value,
    with_cookie,
)

BATCH = 2000


async def _setup() -> tuple[Any, Any, list[tuple[bytes, bytes]]]:
    tmp = Path(tempfile.mkdtemp(prefix="optibase-prof-"))
    ob = bench_optibase(events_path=str(tmp / "events.jsonl"))
    app = wrapped_site(ob)
    await ob.start()
    _, headers = await first_response(app, make_scope(with_cookie(None)))
    ob_cookie = set_cookie_value(headers, ob._cookie_name)
    assert ob_cookie is not None, "OptibaseMiddleware did not set its cookie"
    cookie = OTHER_COOKIES + b"; " + ob_cookie
    return ob, app, with_cookie(cookie)


async def scenario(name: str, seconds: float, max_batches: int, profile: bool) -> None:
    ob, app, returning_headers = await _setup()
    prof = cProfile.Profile() if profile else None
    deadline = time.monotonic() + seconds
    done = 0
    per_request: list[float] = []
    while time.monotonic() < deadline and done < max_batches:
        done += 1
        if name in ("returning", "new", "drain"):
            headers = returning_headers if name == "returning" else with_cookie(None)
            scopes = [make_scope(headers) for _ in range(BATCH)]
            if prof and name != "drain":
                prof.enable()
            t0 = time.perf_counter()
            for scope in scopes:
                await app(scope, receive, discard)
            per_request.append((time.perf_counter() - t0) / BATCH * 1e6)
            if prof:
                prof.disable()
            if name != "returning":
                if prof and name == "drain":
                    prof.enable()
                await ob.flush(60)
                if prof:
                    prof.disable()
        elif name == "convert":
            from optibase_edge import Visitor

            plans, _ = ob._pages.for_path("/")
            vid = str(uuid.uuid4())
            token = ob._codec.encode(vid, {p.test.id: p.variant_ids[0] for p in plans})
            scope = make_scope(with_cookie(None), path="/buy")
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            for _ in range(BATCH):
                await Visitor(ob, scope, token).convert("purchase")
            per_request.append((time.perf_counter() - t0) / BATCH * 1e6)
            if prof:
                prof.disable()
            await ob.flush(60)
        elif name == "choose":
            from optibase_edge._assignment import choose

            plan = ob._plans["cta_color"]
            ids = [str(uuid.uuid4()) for _ in range(BATCH)]
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            for vid in ids:
                choose(plan, vid)
            per_request.append((time.perf_counter() - t0) / BATCH * 1e6)
            if prof:
                prof.disable()
    await ob.aclose(10)
    per_request.sort()
    print(f"{name}: {done} batches of {BATCH}; median {per_request[len(per_request) // 2]:.2f} µs")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


async def _discard(message: Any) -> None:
    return None


async def components() -> None:
    """Micro-timings of the pieces of each request path (µs per call).

    Internals of the library, timed one by one: what each step of a returning
    visitor (warm: token verified here before; cold: never), a new visitor and
    ``await visitor.convert()`` costs, so a change can be judged before and after.
    """
    from starlette.responses import HTMLResponse

    from optibase_edge import Visitor
    from optibase_edge._assignment import choose
    from optibase_edge._blocks import VariantBlocks
    from optibase_edge._cookie import CookieCodec, cookie_in, new_visitor_id, read_cookie
    from optibase_edge._events import ConversionTriggered, raw_request
    from optibase_edge._injection import HtmlInjector, script_tag_end, script_tag_parts
    from optibase_edge._middleware import _Responder

    ob, app, headers = await _setup()
    scope = make_scope(headers)
    token = read_cookie(headers, ob._cookie_name)
    assert token is not None
    cookie_header = dict(headers)[b"cookie"]
    plans, _ = ob._pages.for_path("/")
    mw = app.middleware_stack
    while not hasattr(mw, "_rewrite_for"):
        mw = mw.app
    visitor = Visitor(ob, scope, token)
    visitor._assign_page(plans)
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": HTMLResponse(PAGE).raw_headers,
    }
    body = PAGE.encode()
    src = mw._script.for_root("").src
    variants = visitor.active_variants
    before, after = mw._tag_parts(visitor)
    tag = before + visitor.id.encode() + after + script_tag_end(None)

    # Cold tokens: signed elsewhere with the same keys, never verified here.
    foreign = CookieCodec(ob.settings.signing_keys)
    cold_tokens = []
    for _ in range(40_000):
        vid = new_visitor_id()
        cold_tokens.append(foreign.encode(vid, {p.test.id: choose(p, vid) or "" for p in plans}))
    cold = iter(cold_tokens)

    conversion = ob.settings.conversions_by_id["purchase"]
    loaded = Visitor(ob, scope, token)
    raw = raw_request(scope, dict(headers), "/", "", None)
    exposed = tuple(loaded.active_variants.items())
    event = ConversionTriggered(
        loaded.id, None, time.time(), "purchase", conversion.type, None, exposed, False, "n", raw
    )
    new_scope = make_scope(with_cookie(None))

    def new_assigned() -> Any:
        v = Visitor(ob, new_scope, None)
        v._assign_page(plans)
        return v

    async def convert_once() -> None:
        await Visitor(ob, scope, token).convert("purchase")

    def run_convert() -> None:
        with contextlib.suppress(StopIteration):
            convert_once().send(None)

    parts: dict[str, Any] = {
        "header map, then the cookie from its Cookie header": lambda: cookie_in(
            dict(headers)[b"cookie"], ob._cookie_name
        ),
        "read_cookie (a header repeated: all are scanned)": lambda: read_cookie(
            headers, ob._cookie_name
        ),
        "preview check (none; the Cookie header at hand)": lambda: mw._previews.read(
            scope, cookie_header
        ),
        "Visitor()+for_path+assign_page (warm token)": lambda: Visitor(
            ob, scope, token
        )._assign_page(ob._pages.for_path("/")[0]),
        "cold: codec.decode(a token never seen)": lambda: ob._codec.decode(next(cold)),
        "visitor._cookie_token() (unchanged)": visitor._cookie_token,
        "visitor.active_variants": lambda: visitor.active_variants,
        "tag: parts built (once per variant set)": lambda: script_tag_parts(src, variants),
        "tag: parts looked up by the assignments": lambda: mw._tag_parts(visitor),
        "middleware._rewrite_for() (its stages chosen)": lambda: mw._rewrite_for(
            start, _Responder(mw, {}, _discard, visitor, (), True, "GET", None), True, True
        ),
        "VariantBlocks(...).feed(2 KB page without blocks, last chunk)": lambda: VariantBlocks(
            visitor.variant
        ).feed(body, False),
        "HtmlInjector(...).feed(2 KB page, last chunk)": lambda: HtmlInjector(
            tag, mw._script_marker
        ).feed(body, False),
        "convert: raw_request(scope) (parsed in the sender)": lambda: raw_request(
            scope, loaded._header_map(), "/", "", None
        ),
        "convert: tuple(active_variants.items())": lambda: tuple(loaded.active_variants.items()),
        "convert: ConversionTriggered(...) (named tuple)": lambda: ConversionTriggered(
            loaded.id,
            None,
            time.time(),
            "purchase",
            conversion.type,
            None,
            exposed,
            False,
            os.urandom(16).hex(),
            raw,
        ),
        "convert: ob._emit(event) (once_key + submit)": lambda: ob._emit(event),
        "convert: whole await visitor.convert()": run_convert,
        "new: new_visitor_id()": new_visitor_id,
        "new: choose() for one test": lambda: choose(plans[0], visitor.id),
        "new: Visitor + assign 3 tests + 4 events queued": new_assigned,
        "new: ... + cookie_token() (sign)": lambda: new_assigned()._cookie_token(),
    }
    for label, fn in parts.items():
        # Batches of 2,000 with a drain in between, so the queue never fills (a full
        # queue would time the cheaper drop path instead).
        times = []
        for _ in range(15):
            await ob.flush(30)
            times.append(timeit.timeit(fn, number=2000) / 2000 * 1e6)
        print(f"{label:52s} {min(times):7.2f} µs")
    assert ob.stats()["dropped"] == 0
    await ob.aclose(10)


def summarize(path: str, top: int = 25, within: str = "scenario (") -> None:
    """Self and inclusive sample shares, per function, from a py-spy ``-f raw`` file.

    Only stacks under the scenario loop count (imports and setup are left out).
    """
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or within not in stack:
            continue
        count = int(count_s)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    print(f"{total} samples inside the scenario loop\n\nself time (per function):")
    for frame, c in self_counts.most_common(top):
        print(f"  {100 * c / total:5.1f}%  {frame}")
    print("\ninclusive, optibase_edge functions:")
    ours = [(f, c) for f, c in incl_counts.items() if "optibase_edge" in f]
    for frame, c in sorted(ours, key=lambda x: -x[1])[:top]:
        print(f"  {100 * c / total:5.1f}%  {frame}")


def _short(frame: str) -> str:
    """ "func (path/to/file.py:123)" -> "func (pkg/file.py)": one entry per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    if "optibase_edge/" in where:
        where = "optibase_edge/" + where.split("optibase_edge/", 1)[1]
    elif "/" in where:
        where = "/".join(where.rsplit("/", 2)[-2:])
    return f"{name} ({where})"


def server(out: str, seconds: float, target: str = "benchmarks.apps:create_wrapped_app") -> None:
    """py-spy the wrapped uvicorn site while wrk loads it as a returning visitor."""
    import shutil
    import subprocess

    from .bench_http import BROWSER_HEADERS, OTHER_COOKIES, optibase_cookie
    from .load import run_load
    from .loopback import http_get
    from .servers import servers, uvicorn_server

    tmp = Path(tempfile.mkdtemp(prefix="optibase-prof-"))
    site = uvicorn_server("site", target, {"BENCH_EVENTS_PATH": str(tmp / "events.jsonl")})
    with servers(site):
        headers = dict(BROWSER_HEADERS)
        if "wrapped" in target:
            headers["Cookie"] = f"{OTHER_COOKIES}; {optibase_cookie(site.url)}"
        http_get(site.url + "/", headers=headers)
        spy = subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                out,
                "-d",
                str(int(seconds) + 1),
                "--pid",
                str(site.proc.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        res = run_load(site.url + "/", duration=seconds, connections=32, threads=2, headers=headers)
        spy.wait(timeout=seconds + 30)
        print(f"{target}: {res.rps:,.0f} req/s, p99 {res.p99_ms:.2f} ms; profile in {out}")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_hotspots")
    parser.add_argument(
        "scenario",
        choices=(
            "returning",
            "new",
            "drain",
            "convert",
            "choose",
            "components",
            "summarize",
            "server",
        ),
    )
    parser.add_argument("path", nargs="?", help="summarize: a py-spy raw file")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--max-batches", type=int, default=1000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument(
        "--target",
        default="benchmarks.apps:create_wrapped_app",
        help="server: the uvicorn factory to load",
    )
    parser.add_argument(
        "--within",
        default="scenario (",
        help="summarize: only count stacks holding this frame text",
    )
    args = parser.parse_args()
    if args.scenario == "summarize":
        summarize(args.path, within=args.within)
    elif args.scenario == "server":
        server(args.path or "/tmp/optibase-server.txt", args.seconds, args.target)
    elif args.scenario == "components":
        asyncio.run(components())
    else:
        asyncio.run(scenario(args.scenario, args.seconds, args.max_batches, args.cprofile))


if __name__ == "__main__":
    main()

"""The ``optibase-edge`` command.

``check optibase.toml`` validates a configuration before deploying it;
``report EVENTS [--config optibase.toml] [--json]`` gives each test's results
from a file of Segment messages; ``proxy --upstream URL`` runs the edge (the
middleware in front of a :class:`ReverseProxy` to any site) under uvicorn, and
``proxy --upstream URL --dry-run PATH`` shows the variant blocks of one page.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Sequence

import httpx2

from ._blocks import VariantBlocks
from ._config import ConfigError, Conversion, Test
from ._middleware import OptibaseMiddleware
from ._optibase import Optibase
from ._proxy import ReverseProxy
from ._report import BadLines, json_report, open_events, read_messages, table_report
from ._results import experiment_results
from ._settings import Budget, Settings
from ._toml import read_toml


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optibase-edge")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate an optibase.toml and summarise it")
    check.add_argument("path", nargs="?", default="optibase.toml")
    results = commands.add_parser(
        "report", help="results per test and variant from Segment messages in JSON lines"
    )
    results.add_argument("events", help="a JSON-lines file of Segment messages, or - for stdin")
    results.add_argument(
        "--config", help="an optibase.toml: names, the control, the weights and the order"
    )
    results.add_argument("--json", action="store_true", help="write the results as JSON")
    proxy = commands.add_parser(
        "proxy", help="serve a site through the middleware: variants rendered at the edge"
    )
    proxy.add_argument("--upstream", required=True, help="the site's origin, http://host:port")
    proxy.add_argument("--config", default="optibase.toml", help="the tests and settings")
    proxy.add_argument("--host", default="127.0.0.1")
    proxy.add_argument("--port", type=int, default=8000)
    proxy.add_argument("--workers", type=int, default=1)
    proxy.add_argument(
        "--dry-run", metavar="PATH", help="fetch PATH from the upstream and show its variant blocks"
    )
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(args.events, args.config, as_json=args.json)
    if args.command == "proxy":
        return _proxy(args)
    return _check(args.path)


# The proxy's workers are started by uvicorn, which builds each one's app from these.
UPSTREAM_VARIABLE = "OPTIBASE_EDGE_UPSTREAM"
CONFIG_VARIABLE = "OPTIBASE_EDGE_CONFIG"


def edge_app() -> OptibaseMiddleware:
    """The edge app of ``optibase-edge proxy``, from the variables the command sets."""
    optibase = Optibase.from_file(os.environ[CONFIG_VARIABLE])
    proxy = ReverseProxy(
        os.environ[UPSTREAM_VARIABLE], trusted_proxies=optibase.settings.trusted_proxies
    )
    return OptibaseMiddleware(proxy, optibase=optibase)


def _proxy(args: argparse.Namespace) -> int:
    # Everything a worker would fail on is checked here first, naming what is wrong.
    try:
        optibase = Optibase.from_file(args.config)
        ReverseProxy(args.upstream)
    except (ConfigError, ValueError) as exc:
        print(f"{args.config}: {exc}" if isinstance(exc, ConfigError) else exc, file=sys.stderr)
        return 2
    if args.dry_run is not None:
        return _dry_run(args.upstream, args.dry_run, optibase)
    if args.workers < 1:
        print("--workers must be 1 or more", file=sys.stderr)
        return 2
    try:
        import uvicorn
    except ImportError:
        print("optibase-edge proxy runs under uvicorn: pip install 'optibase-edge[edge]'")
        return 2
    os.environ[UPSTREAM_VARIABLE] = args.upstream
    os.environ[CONFIG_VARIABLE] = os.path.abspath(args.config)
    uvicorn.run(
        "optibase_edge._cli:edge_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        lifespan="on",
        # The edge forwards X-Forwarded-For itself: uvicorn must not rewrite the client.
        proxy_headers=False,
    )
    return 0


def _dry_run(upstream: str, path: str, optibase: Optibase) -> int:
    """Fetch one page and print its variant blocks: where they are, what each test shows."""
    url = upstream.rstrip("/") + "/" + path.lstrip("/")
    try:
        # As ReverseProxy fetches: the address given, whatever HTTP_PROXY says.
        response = httpx2.get(url, timeout=30.0, trust_env=False)
    except httpx2.HTTPError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    content_type = response.headers.get("content-type", "")
    print(f"GET {url}: {response.status_code}, {content_type or 'no content type'}, ", end="")
    print(f"{len(response.content):,} bytes")
    if not content_type.lower().startswith("text/html"):
        print("not HTML: served as it is")
        return 0
    found = _every_block(response.content, optibase)
    if not found:
        print("no variant blocks: served as it is (with the script tag, if it is injected)")
        return 0
    by_test: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
    for test_id, variant, offset in found:
        by_test[test_id].append((variant, offset))
    for test_id, blocks in by_test.items():
        plan = optibase._plans.get(test_id)
        where = ", ".join(f"{variant} at byte {offset:,}" for variant, offset in blocks)
        print(f"test {test_id}: {len(blocks)} block(s): {where}")
        if plan is None:
            print(f"  not in the configuration: everyone is shown {blocks[0][0]} (the first)")
            continue
        test = plan.test
        if test.status == "stopped":
            shown = f"{test.winner} (the winner)" if test.winner else f"{plan.variant_ids[0]}"
            print(f"  stopped: everyone is shown {shown}")
        else:
            print(
                "  a visitor is assigned and shown their variant's block(s); the other "
                f"variants' are removed; outside the test: {plan.variant_ids[0]} (the control)"
            )
        on_page = {variant for variant, _ in blocks}
        unknown = sorted(on_page - set(plan.variant_ids))
        if unknown:
            print(f"  not variants of {test_id}, so never shown: {', '.join(unknown)}")
        missing = [variant for variant in plan.variant_ids if variant not in on_page]
        if missing:
            print(f"  no block here for: {', '.join(missing)} (they see none of these blocks)")
    return 0


def _every_block(page: bytes, optibase: Optibase) -> list[tuple[str, str, int]]:
    """Every block of *page*, nested ones too: (test, variant, offset), in page order.

    A block nested in a variant's block is only read when that variant is kept,
    so the page is read once keeping each test's n-th variant, for every n.
    """
    plans = optibase._plans
    rounds = max((len(plan.variant_ids) for plan in plans.values()), default=1)
    found: dict[int, tuple[str, str, int]] = {}
    for n in range(rounds):

        def nth(test_id: str, n: int = n) -> str | None:
            plan = plans.get(test_id)
            return None if plan is None else plan.variant_ids[min(n, len(plan.variant_ids) - 1)]

        blocks = VariantBlocks(nth)
        blocks.feed(page, False)
        for block in blocks.blocks:
            found.setdefault(block.offset, (block.test_id, block.variant_id, block.offset))
    return [found[offset] for offset in sorted(found)]


def _check(path: str) -> int:
    try:
        settings = Optibase.from_file(path).settings
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: OK")
    _summarise(settings)
    return 0


def _report(events: str, config: str | None, *, as_json: bool) -> int:
    tests: list[Test] = []
    conversions: list[Conversion] = []
    if config is not None:
        try:
            settings = read_toml(config)
        except ConfigError as exc:
            print(f"{config}: {exc}", file=sys.stderr)
            return 2
        tests, conversions = settings["tests"], settings["conversions"]
    bad = BadLines()
    try:
        with open_events(events) as source:
            messages = read_messages(source, bad)
            results = experiment_results(messages, tests=tests, conversions=conversions)
    except OSError as exc:
        print(f"{events}: cannot read it: {exc.strerror}", file=sys.stderr)
        return 2
    if bad.count:
        print(f"{events}: {bad}", file=sys.stderr)
    print(json_report(results) if as_json else table_report(results), end="\n" if as_json else "")
    return 0


def _summarise(settings: Settings) -> None:
    for test in settings.tests:
        weights = ", ".join(
            f"{v.id} ({v.weight:g}{f', serves {v.path}' if v.path else ''})" for v in test.variants
        )
        pages = ", ".join(test.pages) or "assigned by views and variant blocks only"
        print(f"  test {test.id} [{test.status}, traffic {test.traffic:.0%}]: {weights}; {pages}")
    for conversion in settings.conversions:
        where = conversion.selector or conversion.url or "from code"
        if conversion.from_browser:
            where += " and from the browser"
        once = ", one per visitor" if conversion.one_per_visitor else ""
        print(f"  conversion {conversion.id} [{conversion.type.value}{once}]: {where}")
    print(f"  hosts: {', '.join(settings.hosts) or 'any'}")
    consent = "a callable decides" if settings.consent else "assumed"
    gpc = ", Sec-GPC: 1 refuses it" if settings.honor_gpc else ", Sec-GPC ignored"
    print(f"  consent: {consent}{gpc}")
    preview = settings.preview_param
    print(f"  previews: {f'?{preview}=test:variant' if preview else 'off'}")
    print(f"  split-URL variants: {settings.split_url}")
    print(f"  cache-control: {settings.cache_control or 'left to the app'}")
    bots = settings.screen_bots
    print(f"  bot screening: {'a callable decides' if callable(bots) else 'on' if bots else 'off'}")
    visitor, address = settings.collector_visitor_budget, settings.collector_ip_budget
    print(f"  collector budgets: per visitor {_budget(visitor)}; per address {_budget(address)}")
    proxies = ", ".join(settings.trusted_proxies)
    print(f"  client address: {f'forwarded by {proxies}' if proxies else 'the socket'}; ", end="")
    print(f"to Segment: {settings.ip}")
    if settings.development:
        print("  development mode: no secret key and no write key (events go to a local file)")
    elif not settings.segment_write_key:
        print(f"  no Segment write key: events go to {settings.events_path}")
    else:
        print(f"  Segment: {settings.segment_base_url}")


def _budget(budget: Budget | None) -> str:
    if budget is None:
        return "no limit"
    burst, per_second = budget
    return f"{burst} beacons at once, then {per_second:g} a second"

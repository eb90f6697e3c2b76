"""The ``optibase-edge`` command.

``check optibase.toml`` validates a configuration before deploying it;
``report EVENTS [--config optibase.toml] [--json]`` gives each test's results
from a file of Segment messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._config import ConfigError, Conversion, Test
from ._optibase import Optibase
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
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(args.events, args.config, as_json=args.json)
    return _check(args.path)


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
        pages = ", ".join(test.pages) or "assigned from views only"
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

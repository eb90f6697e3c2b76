"""``optibase-edge check optibase.toml``: validate a configuration before deploying it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import ConfigError, build_settings, load_toml


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optibase-edge")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate an optibase.toml and summarise it")
    check.add_argument("path", nargs="?", default="optibase.toml")
    args = parser.parse_args(argv)

    try:
        settings = build_settings(**load_toml(args.path))
    except (ConfigError, TypeError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.path}: OK")
    for test in settings.tests:
        weights = ", ".join(f"{v.id} ({v.weight:g})" for v in test.variants)
        pages = ", ".join(test.pages) or "assigned from views only"
        print(f"  test {test.id} [{test.status}, traffic {test.traffic:.0%}]: {weights}; {pages}")
    for conversion in settings.conversions:
        where = conversion.selector or conversion.url or "from code"
        once = ", one per visitor" if conversion.one_per_visitor else ""
        print(f"  conversion {conversion.id} [{conversion.type.value}{once}]: {where}")
    if settings.development:
        print("  development mode: no secret key and no write key (events go to a local file)")
    elif not settings.segment_write_key:
        print(f"  no Segment write key: events go to {settings.events_path}")
    else:
        print(f"  Segment: {settings.segment_base_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

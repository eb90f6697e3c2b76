"""``python -m benchmarks [--json PATH] [--quick] [--only SECTION ...]``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeAlias

from .config import Config
from .machine import machine_info
from .report import Row, SectionResult

SECTIONS = (
    "middleware",
    "http",
    "events",
    "assignment",
    "memory",
    "faults",
    "screening",
    "results",
    "rewrite",
    "edge",
)

# Every ``benchmarks.bench_<section>`` module has a ``run`` of this type, plain or async.
SectionRun: TypeAlias = Callable[[Config], SectionResult | Coroutine[Any, Any, SectionResult]]


def _section_run(name: str) -> SectionRun:
    run: SectionRun = importlib.import_module(f"benchmarks.bench_{name}").run
    return run


def busy_cores(interval: float = 0.5) -> float | None:
    """How many CPUs other processes kept busy over *interval* (we are idle meanwhile)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(interval)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 == total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def run_section(name: str, cfg: Config) -> SectionResult:
    t0 = time.monotonic()
    external = busy_cores()
    try:
        # Imported here, inside the try: a section whose peer is missing fails alone.
        outcome = _section_run(name)(cfg)
        res = outcome if isinstance(outcome, SectionResult) else asyncio.run(outcome)
    except Exception as exc:  # keep going: one broken section must not hide the rest
        res = SectionResult(name)
        res.error = f"{type(exc).__name__}: {exc}"
        res.raw["traceback"] = traceback.format_exc()
    res.seconds = time.monotonic() - t0
    res.raw["other_processes_busy_cores_at_start"] = external
    if external is not None and external > 0.25:
        res.notes.append(
            f"{name}: other processes kept {external:.2f} of {os.cpu_count()} cores busy when "
            "this section started; its absolute numbers are noisier (ratios are paired)"
        )
    return res


def render_table(results: list[SectionResult]) -> str:
    header = ("Section", "Figure", "Ours", "Reference", "Ratio", "Goal", "Status")
    lines: list[tuple[str, ...]] = []
    for res in results:
        if res.error:
            lines.append((res.name, "SECTION FAILED", res.error[:60], "", "", "", "ERROR"))
            continue
        for row in res.rows:
            status = "" if row.met is None else ("MET" if row.met else "MISSED")
            lines.append(
                (row.section, row.figure, row.ours, row.reference, row.ratio, row.goal, status)
            )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(header)
    ]

    def fmt(cells: tuple[str, ...]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    out = [fmt(header), sep]
    last = None
    for line in lines:
        if last is not None and line[0] != last:
            out.append(sep)
        out.append(fmt(line))
        last = line[0]
    return "\n".join(out)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become strings, tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--json", metavar="PATH", help="write every raw number to PATH")
    parser.add_argument("--quick", action="store_true", help="a shrunken smoke run (< 60 s)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only these sections ({', '.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("segment").setLevel(logging.CRITICAL)
    logging.getLogger("optibase_edge").setLevel(logging.ERROR)
    cfg = Config.make(args.quick)
    info = machine_info()
    print(
        f"optibase_edge benchmarks ({'quick' if cfg.quick else 'full'}) on {info['cpu_model']}, "
        f"{info['cpu_count']} cores, Python {info['python']}",
        flush=True,
    )
    t0 = time.monotonic()
    results: list[SectionResult] = []
    for name in args.only or SECTIONS:
        print(f"  running {name} ...", end="", flush=True)
        res = run_section(name, cfg)
        print(f" {res.seconds:.1f}s" + (f"  ERROR {res.error}" if res.error else ""), flush=True)
        results.append(res)
    total = time.monotonic() - t0
    print()
    print(render_table(results))
    notes = [n for r in results for n in r.notes]
    if notes:
        print()
        for note in notes:
            print(f"note: {note}")
    goals = [row for r in results for row in r.rows if row.met is not None]
    met = sum(1 for row in goals if row.met)
    print(f"\ngoals met: {met}/{len(goals)}; total {total:.1f}s")
    if args.json:
        doc = {
            "mode": "quick" if cfg.quick else "full",
            "config": asdict(cfg),
            "machine": info,
            "total_seconds": total,
            "command": " ".join(
                [Path(sys.executable).name, "-m", "benchmarks", *(argv or sys.argv[1:])]
            ),
            "sections": {
                r.name: {
                    "seconds": r.seconds,
                    "error": r.error,
                    "rows": [row.as_dict() for row in r.rows],
                    "notes": r.notes,
                    "raw": r.raw,
                }
                for r in results
            },
            "goals": {"met": met, "total": len(goals)},
        }
        Path(args.json).write_text(json.dumps(_clean(doc), indent=2, default=str))
        print(f"raw numbers written to {args.json}")
    return 1 if any(r.error for r in results) else 0


__all__ = ["Config", "Row", "main"]

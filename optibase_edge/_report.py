"""``optibase-edge report EVENTS``: results from a file of Segment messages, as a table or JSON.

EVENTS holds one JSON object per line: a Segment message (what development
mode writes to ``optibase-events.jsonl``) or a whole ``{"batch": [...]}``
body; ``-`` reads standard input. A line that is neither is counted, named on
standard error and skipped: a report never ends in a traceback over its input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import IO, Any, Final

from ._results import ConversionResult, Results, TestResult

_NAMED_BAD_LINES: Final = 5


@dataclass(slots=True)
class BadLines:
    """Lines that were not a Segment message: how many, and the first few numbers."""

    count: int = 0
    first: list[int] = field(default_factory=list)

    def add(self, number: int) -> None:
        self.count += 1
        if len(self.first) < _NAMED_BAD_LINES:
            self.first.append(number)

    def __str__(self) -> str:
        more = f" and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        lines = ", ".join(str(n) for n in self.first)
        return f"{self.count} line(s) skipped, not a JSON object or batch: line {lines}{more}"


def read_messages(lines: IO[bytes], bad: BadLines) -> Iterator[Mapping[str, Any]]:
    """The messages in *lines*, in order; each unusable line is added to *bad*."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            bad.add(number)
            continue
        if not isinstance(document, dict):
            bad.add(number)
        elif "batch" in document and "type" not in document:
            batch = document["batch"]
            if isinstance(batch, list) and all(isinstance(item, dict) for item in batch):
                yield from batch
            else:
                bad.add(number)
        else:
            yield document


def json_report(results: Results) -> str:
    return json.dumps(results.to_json(), indent=2, allow_nan=False)


def table_report(results: Results) -> str:
    """A table per test and conversion, the control first and marked, figures a person reads."""
    if not results.tests:
        return "No experiment data: no “Experiment Viewed” in these messages.\n"
    return "\n".join(_test_table(test) for test in results.tests)


_COLUMNS: Final = (
    "variant", "visitors", "converted", "rate", "uplift", "95% CI of difference", "p-value",
    "P(best)", "",
)  # fmt: skip


def _test_table(test: TestResult) -> str:
    visitors = sum(v.visitors for v in test.variants)
    out = [f"Test {_named(test.test_id, test.name)}: {len(test.variants)} variants, "]
    out[0] += f"{visitors:,} visitors"
    if test.srm_warning:
        out.append(
            f"  ! sample ratio mismatch: p = {_p(test.srm_p_value)} (below 0.001). Visitors are"
            " not split as the weights say; find out why before trusting these figures."
        )
    else:
        out.append(f"  sample ratio: p = {_p(test.srm_p_value)}, as the weights say")
    for conversion_id, name in test.conversions:
        rows = [list(_COLUMNS)]
        for variant in test.variants:
            label = _named(variant.variant_id, variant.name)
            result = variant.conversions[conversion_id]
            rows.append(
                [
                    f"{label} [control]" if variant.control else label,
                    f"{variant.visitors:,}",
                    f"{result.converted:,}",
                    _percent(result.rate),
                    _signed_percent(result.uplift),
                    _interval(result),
                    "—" if result.p_value is None else _p(result.p_value),
                    f"{result.p2bb:.1%}",
                    "" if variant.control else _verdict(result),
                ]
            )
        out.append(f"\n  {_named(conversion_id, name)}")
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        for row in rows:
            cells = [
                cell.ljust(width) if i in (0, len(row) - 1) else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            out.append("    " + "  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def _verdict(result: ConversionResult) -> str:
    if result.clear and result.difference is not None:
        return f"{'better' if result.difference > 0 else 'worse'} than the control at 5 %"
    if result.more_visitors is None:
        return "not detectable yet"
    return f"needs about {result.more_visitors:,} more visitors per variant"


def _named(identifier: str, name: str | None) -> str:
    return f"{name} ({identifier})" if name and name != identifier else identifier


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _signed_percent(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _interval(result: ConversionResult) -> str:
    if result.ci_low is None or result.ci_high is None:
        return "—"
    return f"[{result.ci_low * 100:+.2f}, {result.ci_high * 100:+.2f}] pts"


def _p(value: float) -> str:
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def open_events(path: str) -> AbstractContextManager[IO[bytes]]:
    """*path* opened for reading bytes; ``-`` is standard input, left open afterwards."""
    return nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb")

"""What a section hands back to the runner: table rows, raw numbers, notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the printed table; every cell is already formatted text."""

    section: str
    figure: str
    ours: str
    reference: str
    ratio: str
    goal: str = ""
    met: bool | None = None  # None: informational, no goal

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "figure": self.figure,
            "ours": self.ours,
            "reference": self.reference,
            "ratio": self.ratio,
            "goal": self.goal,
            "met": self.met,
        }


@dataclass
class SectionResult:
    """One section's outcome: its rows, and everything measured, for the JSON report.

    The runner sets *error* when the section raised, and *seconds* afterwards.
    """

    name: str
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def fmt_us(value: float) -> str:
    """Microseconds: one decimal from 10 µs up, two below."""
    return f"{value:,.1f} µs" if value >= 10 else f"{value:,.2f} µs"


def fmt_ms(value: float) -> str:
    return f"{value:,.2f} ms"

"""The dashboard's results fragment: one renderer, for the page and for ``GET /results``.

:func:`results_html` turns what :func:`optibase_edge.experiment_results`
returns into HTML: per test, its sample-ratio check, then a table per
conversion with one row per variant, the control first. Every stored string
is escaped; the SVG inside uses presentation attributes and classes only (no
``style=``), so the fragment renders under the dashboard's strict CSP, also
when its script swaps a fresh copy in.

What a program may read off it (the tests do):

* ``article[data-test=ID]`` per test; in it ``[data-field=srm]``, whose
  ``data-value`` is the SRM p-value and ``data-warning`` ``true`` or ``false``;
* ``section[data-conversion=ID]`` per conversion of the test, holding
  ``tr[data-variant=ID]`` per variant (``data-control`` ``true`` for the
  control);
* in each row, cells ``[data-field=F]`` for F in ``visitors``, ``converted``,
  ``rate``, ``uplift``, ``ci``, ``p_value``, ``p2bb`` and ``verdict``. A
  figure's ``data-value`` is the exact number (Python's repr of the int or
  float, empty for None); the text is rounded for people. The ``ci`` cell's
  ``data-value`` is the absolute difference from the control's rate and
  ``data-low``/``data-high`` its 95 % interval. The ``verdict`` cell's
  ``data-value`` is ``baseline``, ``better``, ``worse``, ``needs-visitors``
  (``data-more-visitors`` says how many) or ``not-detectable``;
* ``[data-field=likely-best]`` in the row of the variant whose probability to
  be best is the highest, when it is at least :data:`LIKELY_BEST`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from demo_site.html_templates import escape as _e
from optibase_edge._results import ConversionResult, Results, TestResult, VariantResult

LIKELY_BEST: Final = 0.95
"""The probability to be best from which a variant is marked "likely best"."""

EMPTY: Final = (
    '<p class="empty">No experiment data yet. “Experiment Viewed” and '
    "“Conversion Triggered” tracks show up here.</p>"
)

_MINUS: Final = "\u2212"
_NAME_CHARS: Final = 120
_ID_CHARS: Final = 80

# Every table has the same columns, sized by the stylesheet: the tables of a page line up.
_COLUMNS: Final = (
    '<colgroup><col class="col-variant"><col class="col-visitors"><col class="col-converted">'
    '<col class="col-rate"><col class="col-uplift"><col class="col-ci"><col class="col-p">'
    '<col class="col-p2bb"><col class="col-verdict"></colgroup>'
)

# The interval bar: the absolute difference on a symmetric axis around zero.
_BAR_WIDTH: Final = 120
_BAR_HEIGHT: Final = 16
_BAR_PAD: Final = 5
_MIN_EXTENT: Final = 0.001
"""The narrowest axis (±0.1 pts), so a zero-width interval still has a scale."""

# The probability-to-be-best bar.
_P2BB_WIDTH: Final = 64
_P2BB_HEIGHT: Final = 6


def results_html(results: Results) -> str:
    """The results of every test, or a note saying there are none yet."""
    return "".join(_test_html(test) for test in results.tests) or EMPTY


# --------------------------------------------------------------------------- tests


def _test_html(test: TestResult) -> str:
    body = "".join(_conversion_html(test, cid, name) for cid, name in test.conversions)
    return (
        f'<article class="test" data-test="{_e(test.test_id)}">'
        f"<h2>{_label(test.test_id, test.name)}</h2>"
        f"{_srm_html(test)}{body or _visitors_only_html(test)}</article>"
    )


def _srm_html(test: TestResult) -> str:
    p = test.srm_p_value
    attributes = (
        f'data-field="srm" data-value="{_exact(p)}"'
        f' data-warning="{"true" if test.srm_warning else "false"}"'
    )
    if test.srm_warning:
        return (
            f'<p class="srm srm-warning" role="alert" {attributes}>'
            f"<strong>Sample ratio mismatch</strong> (SRM {_p_is(p)}): the split of"
            " visitors does not match the configured weights. Do not trust these figures"
            " until that is explained.</p>"
        )
    return f'<p class="srm srm-ok" {attributes}>traffic split as configured (SRM {_p_is(p)})</p>'


def _visitors_only_html(test: TestResult) -> str:
    """Before any conversion: at least who saw which variant."""
    visitors = ", ".join(
        f'<span data-variant="{_e(v.variant_id)}">{_label(v.variant_id, v.name)}: '
        f'<span data-field="visitors" data-value="{_exact(v.visitors)}">{v.visitors:,}</span>'
        "</span>"
        for v in test.variants
    )
    return f'<p class="empty">No conversions yet. Visitors: {visitors}.</p>'


# --------------------------------------------------------------------------- conversions


def _conversion_html(test: TestResult, conversion_id: str, name: str | None) -> str:
    rows = [(v, v.conversions[conversion_id]) for v in test.variants]
    extent = _axis_extent([r for _, r in rows])
    best = _likely_best(rows)
    body = "".join(_variant_row(v, r, extent, likely_best=v is best) for v, r in rows)
    return (
        f'<section class="conversion" data-conversion="{_e(conversion_id)}">'
        f"<h3>{_label(conversion_id, name)}</h3>"
        f'<table class="results">{_COLUMNS}<thead><tr>'
        '<th scope="col">Variant</th><th scope="col" class="num">Visitors</th>'
        '<th scope="col" class="num">Converted</th><th scope="col" class="num">Rate</th>'
        '<th scope="col" class="num">Uplift</th>'
        f'<th scope="col">Difference, 95 % CI <small>(axis ±{_points(extent)} pts)</small></th>'
        '<th scope="col" class="num">p-value</th><th scope="col">Probability to be best</th>'
        '<th scope="col">Verdict</th>'
        f"</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _axis_extent(results: Sequence[ConversionResult]) -> float:
    """Half the width of the table's shared axis: a round number covering every interval."""
    reach = [abs(x) for r in results for x in (r.difference, r.ci_low, r.ci_high) if x is not None]
    return _round_up(max([*reach, _MIN_EXTENT]))


def _round_up(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least *value* (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-9))


def _likely_best(rows: Sequence[tuple[VariantResult, ConversionResult]]) -> VariantResult | None:
    variant, result = max(rows, key=lambda row: row[1].p2bb)
    return variant if result.p2bb >= LIKELY_BEST else None


def _variant_row(
    variant: VariantResult,
    result: ConversionResult,
    extent: float,
    *,
    likely_best: bool,
) -> str:
    verdict, verdict_text = _verdict(variant, result)
    tags = ' <span class="tag">Control</span>' if variant.control else ""
    if likely_best:
        tags += ' <span class="tag best" data-field="likely-best">likely best</span>'
    cells = [
        f'<th scope="row">{_label(variant.variant_id, variant.name)}{tags}</th>',
        _number_cell("visitors", variant.visitors, f"{variant.visitors:,}"),
        _number_cell("converted", result.converted, f"{result.converted:,}"),
        _number_cell("rate", result.rate, _percent(result.rate)),
        _number_cell("uplift", result.uplift, _signed_percent(result.uplift)),
        _interval_cell(result, extent, verdict),
        _number_cell("p_value", result.p_value, _p_value(result.p_value)),
        f'<td class="p2bb" data-field="p2bb" data-value="{_exact(result.p2bb)}">'
        f'<span class="figure">{result.p2bb:.1%}</span>{_probability_svg(result.p2bb)}</td>',
        f'<td class="verdict {verdict}" data-field="verdict" data-value="{verdict}"'
        f' data-more-visitors="{_exact(result.more_visitors)}">{_e(verdict_text)}</td>',
    ]
    control = "true" if variant.control else "false"
    return (
        f'<tr data-variant="{_e(variant.variant_id)}" data-control="{control}">'
        f"{''.join(cells)}</tr>"
    )


def _verdict(variant: VariantResult, result: ConversionResult) -> tuple[str, str]:
    """(kind, text) of what the row says: also the CSS class colouring it."""
    if variant.control:
        return "baseline", "baseline"
    if result.clear and result.difference is not None:
        kind = "better" if result.difference > 0 else "worse"
        return kind, f"{kind} than control at 5\u00a0%"
    if result.more_visitors is None:
        return "not-detectable", "not detectable yet"
    return "needs-visitors", f"needs about {result.more_visitors:,} more visitors per variant"


# --------------------------------------------------------------------------- cells


def _number_cell(field: str, value: float | None, text: str) -> str:
    return f'<td class="num" data-field="{field}" data-value="{_exact(value)}">{_e(text)}</td>'


def _interval_cell(result: ConversionResult, extent: float, verdict: str) -> str:
    low, high, difference = result.ci_low, result.ci_high, result.difference
    attributes = (
        f'data-field="ci" data-value="{_exact(difference)}"'
        f' data-low="{_exact(low)}" data-high="{_exact(high)}"'
    )
    if difference is None or low is None or high is None:
        return f'<td class="ci" {attributes}>—</td>'
    label = f"{_signed(difference * 100)} pts [{_signed(low * 100)}, {_signed(high * 100)}]"
    return (
        f'<td class="ci" {attributes}>{_interval_svg(low, high, difference, extent, verdict)}'
        f'<span class="ci-label">{_e(label)}</span></td>'
    )


# --------------------------------------------------------------------------- SVG


def _axis_x(value: float, extent: float) -> float:
    """Where *value* falls on a bar whose ends are -*extent* and +*extent*."""
    half = (_BAR_WIDTH - 2 * _BAR_PAD) / 2
    return round(_BAR_PAD + half + half * max(-1.0, min(1.0, value / extent)), 1)


def _interval_svg(low: float, high: float, point: float, extent: float, tone: str) -> str:
    """The interval as a bar around a zero line, the point estimate as a dot."""
    middle = _BAR_HEIGHT / 2
    zero = _axis_x(0.0, extent)
    return (
        f'<svg class="interval {tone}" xmlns="http://www.w3.org/2000/svg" width="{_BAR_WIDTH}"'
        f' height="{_BAR_HEIGHT}" viewBox="0 0 {_BAR_WIDTH} {_BAR_HEIGHT}" aria-hidden="true">'
        f'<line class="axis" x1="{_BAR_PAD}" y1="{middle}" x2="{_BAR_WIDTH - _BAR_PAD}"'
        f' y2="{middle}"/>'
        f'<line class="zero" x1="{zero}" y1="1" x2="{zero}" y2="{_BAR_HEIGHT - 1}"/>'
        f'<line class="range" x1="{_axis_x(low, extent)}" y1="{middle}"'
        f' x2="{_axis_x(high, extent)}" y2="{middle}"/>'
        f'<circle class="point" cx="{_axis_x(point, extent)}" cy="{middle}" r="3.5"/></svg>'
    )


def _probability_svg(probability: float) -> str:
    """A small gauge, full at a probability of 1."""
    filled = round(_P2BB_WIDTH * max(0.0, min(1.0, probability)), 1)
    return (
        f'<svg class="gauge" xmlns="http://www.w3.org/2000/svg" width="{_P2BB_WIDTH}"'
        f' height="{_P2BB_HEIGHT}" viewBox="0 0 {_P2BB_WIDTH} {_P2BB_HEIGHT}" aria-hidden="true">'
        f'<rect class="track" width="{_P2BB_WIDTH}" height="{_P2BB_HEIGHT}" rx="3"/>'
        f'<rect class="fill" width="{filled}" height="{_P2BB_HEIGHT}" rx="3"/></svg>'
    )


# --------------------------------------------------------------------------- text


def _label(identifier: str, name: str | None) -> str:
    """A name with its id in small print, or the id alone when there is no other name."""
    if name and name != identifier:
        return f'{_e(name, _NAME_CHARS)} <small class="id">{_e(identifier, _ID_CHARS)}</small>'
    return f'<code class="id">{_e(identifier, _ID_CHARS)}</code>'


def _exact(value: float | None) -> str:
    return "" if value is None else repr(value)


def _signed(value: float) -> str:
    """One decimal, always signed, with a true minus sign."""
    return f"{value:+.1f}".replace("-", _MINUS)


def _points(value: float) -> str:
    """*value* (a rate difference) in percentage points, without trailing zeros."""
    return f"{value * 100:.4g}"


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.2%}"


def _signed_percent(value: float | None) -> str:
    return "—" if value is None else f"{_signed(value * 100)}%"


def _p_is(p: float) -> str:
    """``p = 0.1234``, or ``p < 0.0001``."""
    shown = _p_value(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def _p_value(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"

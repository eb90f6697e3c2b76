"""The sink dashboard's results as a program reads them, and the check that they are right.

The results fragment promises ``data-`` attributes (see
:mod:`demo_site.results_html`): :func:`read_results` reads them from HTML,
:data:`READ_RESULTS_JS` from a page in Chromium (then :func:`views_from_json`),
both into :class:`TestView` objects. :func:`assert_shows` compares those with
what :func:`optibase_edge.experiment_results` returned, figure by figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Final, TypeVar

from optibase_edge._results import ConversionResult, Results, TestResult, VariantResult

LIKELY_BEST: Final = 0.95


@dataclass(frozen=True)
class Cell:
    """An element with ``data-field``: its text (spaces collapsed) and its ``data-`` attributes."""

    text: str
    data: Mapping[str, str]
    """Keyed without the ``data-`` prefix: ``value``, ``low``, ``more-visitors``..."""

    @property
    def value(self) -> str:
        return self.data.get("value", "")


@dataclass
class Row:
    variant: str
    control: bool
    label: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def likely_best(self) -> bool:
        return "likely-best" in self.cells


@dataclass
class Table:
    conversion: str
    heading: str = ""
    rows: list[Row] = field(default_factory=list)

    def row(self, variant: str) -> Row:
        return next(row for row in self.rows if row.variant == variant)


@dataclass
class TestView:
    __test__ = False  # not a pytest test class

    test: str
    heading: str = ""
    srm: Cell = Cell("", {})
    tables: list[Table] = field(default_factory=list)

    def table(self, conversion: str) -> Table:
        return next(table for table in self.tables if table.conversion == conversion)


def view(views: Sequence[TestView], test: str) -> TestView:
    return next(v for v in views if v.test == test)


# --------------------------------------------------------------------------- reading HTML

_VOID: Final = frozenset(
    {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}
)


def _words(text: str) -> str:
    return " ".join(text.split())


_Opened = TestView | Table | Row | None
_T = TypeVar("_T", TestView, Table, Row)


def _store(
    target: object, attribute: str, data: Mapping[str, str] | None = None
) -> Callable[[str], None]:
    """Sets *attribute* of *target* to an element's text, or to its Cell when given *data*."""

    def store(text: str) -> None:
        setattr(target, attribute, text if data is None else Cell(text, data))

    return store


def _store_cell(cells: dict[str, Cell], data: Mapping[str, str]) -> Callable[[str], None]:
    """Files an element's Cell in *cells* under its ``data-field``."""

    def store(text: str) -> None:
        cells[data["field"]] = Cell(text, data)

    return store


@dataclass
class _Element:
    tag: str
    opened: _Opened  # the test, table or row this element is, if any
    on_close: Callable[[str], None] | None  # what to do with its text
    text: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    """Collects tests, tables and rows as their elements open, texts as elements close."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tests: list[TestView] = []
        self._open: list[_Element] = []

    def _inside(self, kind: type[_T]) -> _T | None:
        """The innermost open test, table or row of *kind*, or None outside any."""
        opened = (e.opened for e in reversed(self._open) if isinstance(e.opened, kind))
        return next(opened, None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        data = {k[5:]: v or "" for k, v in attrs if k.startswith("data-")}
        test, table, row = self._inside(TestView), self._inside(Table), self._inside(Row)
        opened: _Opened = None
        on_close: Callable[[str], None] | None = None
        if tag == "article" and "test" in data:
            opened = TestView(data["test"])
            self.tests.append(opened)
        elif tag == "section" and "conversion" in data and test:
            opened = Table(data["conversion"])
            test.tables.append(opened)
        elif tag == "tr" and "variant" in data and table:
            opened = Row(data["variant"], data.get("control") == "true")
            table.rows.append(opened)
        elif data.get("field") == "srm" and test:
            on_close = _store(test, "srm", data)
        elif "field" in data and row:
            on_close = _store_cell(row.cells, data)
        elif tag == "th" and row:
            on_close = _store(row, "label")
        elif tag == "h3" and table:
            on_close = _store(table, "heading")
        elif tag == "h2" and test:
            on_close = _store(test, "heading")
        self._open.append(_Element(tag, opened, on_close))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            element = self._open.pop()
            if element.on_close is not None:
                element.on_close(_words("".join(element.text)))
            if element.tag == tag:
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text.append(data)


def read_results(html: str) -> list[TestView]:
    """The tests shown in *html* (a dashboard page, or its results fragment), in order."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.tests


# --------------------------------------------------------------------------- reading in Chromium

READ_RESULTS_JS: Final = """() => {
  const words = (element) => (element ? element.textContent : "")
    .split(/\\s+/).filter(Boolean).join(" ");
  const data = (element) => Object.fromEntries([...element.attributes]
    .filter((a) => a.name.startsWith("data-")).map((a) => [a.name.slice(5), a.value]));
  const cell = (element) => ({text: words(element), data: data(element)});
  return [...document.querySelectorAll("#results article[data-test]")].map((article) => ({
    test: article.dataset.test,
    heading: words(article.querySelector("h2")),
    srm: cell(article.querySelector("[data-field=srm]")),
    tables: [...article.querySelectorAll("section[data-conversion]")].map((section) => ({
      conversion: section.dataset.conversion,
      heading: words(section.querySelector("h3")),
      rows: [...section.querySelectorAll("tbody tr[data-variant]")].map((tr) => ({
        variant: tr.dataset.variant,
        control: tr.dataset.control === "true",
        label: words(tr.querySelector("th")),
        cells: Object.fromEntries([...tr.querySelectorAll("[data-field]")]
          .map((element) => [element.dataset.field, cell(element)])),
      })),
    })),
  }));
}"""
"""A script for ``page.evaluate``: the results on the page, for :func:`views_from_json`."""


def views_from_json(tests: list[dict[str, Any]]) -> list[TestView]:
    """What :data:`READ_RESULTS_JS` returned, as :func:`read_results` returns it."""

    def cell(found: dict[str, Any]) -> Cell:
        return Cell(found["text"], found["data"])

    return [
        TestView(
            test["test"],
            test["heading"],
            cell(test["srm"]),
            [
                Table(
                    table["conversion"],
                    table["heading"],
                    [
                        Row(
                            row["variant"],
                            row["control"],
                            row["label"],
                            {name: cell(found) for name, found in row["cells"].items()},
                        )
                        for row in table["rows"]
                    ],
                )
                for table in test["tables"]
            ],
        )
        for test in tests
    ]


# --------------------------------------------------------------------------- checking


def label(identifier: str, name: str | None) -> str:
    """How the page names a test, conversion or variant: the name and the id, or the id."""
    return f"{name} {identifier}" if name and name != identifier else identifier


def expected_verdict(
    variant: VariantResult, result: ConversionResult, control: ConversionResult
) -> tuple[str, str]:
    """(data-value, text) of the verdict cell, as the issue states them."""
    if variant.control:
        return "baseline", "baseline"
    if result.clear:
        assert result.rate is not None and control.rate is not None
        kind = "better" if result.rate > control.rate else "worse"
        return kind, f"{kind} than control at 5 %"
    if result.more_visitors is None:
        return "not-detectable", "not detectable yet"
    return "needs-visitors", f"needs about {result.more_visitors:,} more visitors per variant"


def assert_exact(shown: str, expected: float | None, what: object) -> None:
    """A ``data-value`` holds *expected* (repr of a number, or empty for None)."""
    if expected is None:
        assert shown == "", (what, shown)
    elif isinstance(expected, int):
        assert shown == str(expected), (what, shown, expected)
    else:
        assert shown != "" and math.isclose(float(shown), expected, rel_tol=1e-9), (
            what,
            shown,
            expected,
        )


def assert_shows(views: Sequence[TestView], results: Results) -> None:
    """The page shows exactly *results*: every test, conversion, variant and figure, in order."""
    assert [v.test for v in views] == [t.test_id for t in results.tests]
    for shown, test in zip(views, results.tests, strict=True):
        _assert_test(shown, test)


def _assert_test(shown: TestView, test: TestResult) -> None:
    where = test.test_id
    assert shown.heading == label(test.test_id, test.name), where
    assert shown.srm.data.get("warning") == ("true" if test.srm_warning else "false"), where
    assert_exact(shown.srm.value, test.srm_p_value, (where, "srm"))
    assert ("does not match the configured weights" in shown.srm.text) == test.srm_warning
    assert ("traffic split as configured" in shown.srm.text) != test.srm_warning
    assert [t.conversion for t in shown.tables] == [cid for cid, _ in test.conversions], where
    control = next(v for v in test.variants if v.control)
    for table, (conversion_id, name) in zip(shown.tables, test.conversions, strict=True):
        assert table.heading == label(conversion_id, name), (where, conversion_id)
        assert [r.variant for r in table.rows] == [v.variant_id for v in test.variants]
        assert table.rows[0].control and table.rows[0].variant == control.variant_id
        top = max(test.variants, key=lambda v: v.conversions[conversion_id].p2bb)
        best = top if top.conversions[conversion_id].p2bb >= LIKELY_BEST else None
        for row, variant in zip(table.rows, test.variants, strict=True):
            _assert_row(
                row, variant, conversion_id, control.conversions[conversion_id], variant is best
            )


def _assert_row(
    row: Row,
    variant: VariantResult,
    conversion_id: str,
    control: ConversionResult,
    likely_best: bool,
) -> None:
    where = (variant.variant_id, conversion_id)
    result = variant.conversions[conversion_id]
    tags = (" Control" if variant.control else "") + (" likely best" if likely_best else "")
    assert row.control == variant.control, where
    assert row.label == label(variant.variant_id, variant.name) + tags, where
    assert row.likely_best == likely_best, where
    cells = row.cells
    assert_exact(cells["visitors"].value, variant.visitors, (where, "visitors"))
    assert cells["visitors"].text == f"{variant.visitors:,}", where
    assert_exact(cells["converted"].value, result.converted, (where, "converted"))
    for name in ("rate", "uplift", "p_value"):
        assert_exact(cells[name].value, getattr(result, name), (where, name))
    assert_exact(cells["p2bb"].value, result.p2bb, (where, "p2bb"))
    assert cells["p2bb"].text == f"{result.p2bb:.1%}", where
    interval = cells["ci"].data
    assert_exact(interval.get("low", ""), result.ci_low, (where, "ci_low"))
    assert_exact(interval.get("high", ""), result.ci_high, (where, "ci_high"))
    difference = (
        None
        if variant.control or result.rate is None or control.rate is None
        else result.rate - control.rate
    )
    assert_exact(cells["ci"].value, difference, (where, "difference"))
    if result.ci_low is not None and difference is not None:
        assert " pts [" in cells["ci"].text, where  # the interval is also written out
    kind, text = expected_verdict(variant, result, control)
    assert (cells["verdict"].value, cells["verdict"].text) == (kind, text), where
    assert_exact(cells["verdict"].data.get("more-visitors", ""), result.more_visitors, where)

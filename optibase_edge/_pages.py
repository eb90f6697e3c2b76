"""Which tests are assigned, and which PAGE_VIEW conversions fire, on a path (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import translate

from ._assignment import Plan
from ._config import Conversion, ConversionType

_CACHE_SIZE = 4096


class PageRules:
    """The ``pages`` globs of tests and the ``url`` globs of PAGE_VIEW conversions.

    A trailing slash never matters (``/pricing/`` is ``/pricing``). A test is not
    assigned on the paths of its own split-URL variants: they are what its pages
    become, not pages of it. Answers are cached per path, in a bounded cache:
    paths come from clients.
    """

    def __init__(self, plans: Sequence[Plan], conversions: Sequence[Conversion]) -> None:
        self._tests = [
            (p, _compile(p.test.pages), frozenset(_trim(path) for path in p.split_paths.values()))
            for p in plans
            if p.test.pages
        ]
        self._conversions = [
            (c, _compile([c.url]))
            for c in conversions
            if c.type is ConversionType.PAGE_VIEW and c.url
        ]
        self._by_path: dict[str, tuple[tuple[Plan, ...], tuple[Conversion, ...]]] = {}

    def for_path(self, path: str) -> tuple[tuple[Plan, ...], tuple[Conversion, ...]]:
        """The tests assigned on *path*, and the PAGE_VIEW conversions it fires."""
        found = self._by_path.get(path)
        if found is None:
            trimmed = _trim(path)
            found = (
                tuple(
                    p
                    for p, rx, own_variants in self._tests
                    if rx.match(trimmed) and trimmed not in own_variants
                ),
                tuple(c for c, rx in self._conversions if rx.match(trimmed)),
            )
            if len(self._by_path) >= _CACHE_SIZE:
                self._by_path.clear()
            self._by_path[path] = found
        return found


def _compile(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{translate(_trim(p))})" for p in patterns))


def _trim(path: str) -> str:
    return path.rstrip("/") or "/"

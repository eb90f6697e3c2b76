"""What an experimenter defines: tests, their variants, and conversions.

Each is a small frozen dataclass, validated when it is built, so a bad
definition fails at start-up with a :class:`ConfigError` naming the field,
never at request time.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

TestStatus = Literal["running", "paused", "stopped"]

_MAX_ID_LENGTH = 200
# A path of the app: no scheme or host ("//evil.example" is a host), no query or fragment.
_SPLIT_PATH = re.compile(r"^/(?!/)[^?#\s]*\Z")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class ConversionType(enum.StrEnum):
    """How a conversion is detected."""

    CLICK = "CLICK"
    PAGE_VIEW = "PAGE_VIEW"
    PROGRAMMATIC = "PROGRAMMATIC"


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of a test.

    ``weight`` is relative to the other variants' weights (default 1).
    ``path`` makes it a split-URL variant: a visitor in it is served the page at
    ``path`` (a path of the same app) for the test's pages, by an internal
    rewrite or a redirect (the ``split_url`` setting).
    """

    id: str
    weight: float = 1.0
    name: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "variant.id")
        if (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, int | float)
            or not math.isfinite(self.weight)
            or self.weight <= 0
        ):
            raise ConfigError(
                f"variants[{self.id}].weight must be a number > 0, got {self.weight!r}"
            )
        if self.path is not None and not (
            isinstance(self.path, str) and _SPLIT_PATH.match(self.path)
        ):
            raise ConfigError(
                f"variants[{self.id}].path must be a path of this site like '/landing-b' "
                f"(no query, fragment or host), got {self.path!r}"
            )


@dataclass(frozen=True, slots=True)
class Test:
    """An A/B test: two or more variants, the first one being the control.

    ``pages`` are glob patterns (``"/landing/*"``) of paths on which the test is
    assigned with no code; a view may also assign it by calling
    ``visitor.variant(test_id)``. ``traffic`` is the share (0-1) of visitors who
    enter the test. A ``stopped`` test shows its ``winner`` (if any) to everyone
    and records nothing.
    """

    __test__ = False  # not a pytest test class

    id: str
    variants: Sequence[Variant]
    pages: Sequence[str] = ()
    traffic: float = 1.0
    status: TestStatus = "running"
    winner: str | None = None
    seed: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "test.id")
        where = f"tests[{self.id}]"
        variants = tuple(self.variants)
        for variant in variants:
            if not isinstance(variant, Variant):
                raise ConfigError(f"{where}.variants must hold Variant objects, got {variant!r}")
        if len(variants) < 2:
            raise ConfigError(f"{where}.variants needs at least two variants")
        check_unique([v.id for v in variants], f"{where}.variants")
        if not math.isfinite(sum(v.weight for v in variants)):
            raise ConfigError(f"{where}.variants: the weights add up to more than a float holds")
        object.__setattr__(self, "variants", variants)
        if isinstance(self.pages, str):
            raise ConfigError(f"{where}.pages must be a list of patterns, not a string")
        pages = tuple(self.pages)
        for page in pages:
            if not isinstance(page, str) or not page.startswith("/"):
                raise ConfigError(f"{where}.pages: {page!r} must be a path pattern starting '/'")
        object.__setattr__(self, "pages", pages)
        if (
            isinstance(self.traffic, bool)
            or not isinstance(self.traffic, int | float)
            or not 0 <= self.traffic <= 1
        ):
            raise ConfigError(f"{where}.traffic must be between 0 and 1, got {self.traffic!r}")
        if self.status not in ("running", "paused", "stopped"):
            raise ConfigError(
                f"{where}.status must be 'running', 'paused' or 'stopped', got {self.status!r}"
            )
        if self.winner is not None and self.winner not in {v.id for v in variants}:
            raise ConfigError(f"{where}.winner {self.winner!r} is not one of its variants")
        for name in ("starts_at", "ends_at"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, datetime):
                    raise ConfigError(f"{where}.{name} must be a datetime, got {value!r}")
                if value.tzinfo is None:
                    object.__setattr__(self, name, value.replace(tzinfo=UTC))
        split = [v.id for v in variants if v.path is not None]
        if split and not pages:
            raise ConfigError(
                f"{where}.variants[{split[0]}].path needs the test to have pages: a split-URL "
                "variant replaces one of the test's pages"
            )
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ConfigError(f"{where}.ends_at must be after starts_at")
        if self.seed is not None and not isinstance(self.seed, str):
            raise ConfigError(f"{where}.seed must be a string")

    def variant_by_id(self, variant_id: str) -> Variant | None:
        for variant in self.variants:
            if variant.id == variant_id:
                return variant
        return None

    @property
    def shown_to_all(self) -> str | None:
        """What everyone sees of a test they are not assigned in: a stopped test's winner.

        None means the control (or, in code, whatever the view shows by default).
        """
        return self.winner if self.status == "stopped" else None

    def is_running(self, now: datetime) -> bool:
        """Running and inside its schedule at *now* (an aware datetime)."""
        if self.status != "running":
            return False
        if self.starts_at is not None and now < self.starts_at:
            return False
        return not (self.ends_at is not None and now >= self.ends_at)


@dataclass(frozen=True, slots=True)
class Conversion:
    """A goal: a CLICK on ``selector``, a PAGE_VIEW of ``url``, or a PROGRAMMATIC call.

    A PROGRAMMATIC conversion is fired by your server code. Only with
    ``from_browser=True`` may a page fire it too, with
    ``window.optibaseSendConversionEvent(id)``: anything a browser may send,
    any visitor can send, as often as they like. CLICK conversions are
    browser-fired by nature.
    """

    id: str
    type: ConversionType
    one_per_visitor: bool = False
    selector: str | None = None
    url: str | None = None
    name: str | None = None
    from_browser: bool = False

    def __post_init__(self) -> None:
        _check_id(self.id, "conversion.id")
        where = f"conversions[{self.id}]"
        try:
            object.__setattr__(self, "type", ConversionType(self.type))
        except ValueError:
            allowed = ", ".join(t.value for t in ConversionType)
            raise ConfigError(f"{where}.type must be one of {allowed}, got {self.type!r}") from None
        if self.type is ConversionType.CLICK and not self.selector:
            raise ConfigError(f"{where}.selector is required for a CLICK conversion")
        if self.type is ConversionType.PAGE_VIEW:
            if not self.url:
                raise ConfigError(f"{where}.url is required for a PAGE_VIEW conversion")
            if not self.url.startswith("/"):
                raise ConfigError(f"{where}.url {self.url!r} must be a path pattern starting '/'")
        if not isinstance(self.from_browser, bool):
            raise ConfigError(f"{where}.from_browser must be true or false")
        if self.from_browser and self.type is ConversionType.PAGE_VIEW:
            raise ConfigError(
                f"{where}.from_browser applies to PROGRAMMATIC conversions; a PAGE_VIEW "
                "conversion is detected by the server"
            )

    @property
    def browser_may_fire(self) -> bool:
        """The collector accepts this conversion from a page's script."""
        return self.type is ConversionType.CLICK or self.from_browser


def _check_id(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_ID_LENGTH:
        raise ConfigError(f"{what} {value[:20]!r}... is longer than {_MAX_ID_LENGTH} characters")


def check_unique(ids: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ConfigError(f"{where}: duplicate id {item!r}")
        seen.add(item)

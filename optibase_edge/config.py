"""What a site configures: tests, variants, conversions and settings.

Everything here is a small frozen dataclass, validated when it is built, so a
bad configuration fails at start-up with a :class:`ConfigError` naming the
field, never at request time.
"""

from __future__ import annotations

import enum
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

TestStatus = Literal["running", "paused", "stopped"]
Region = Literal["us", "eu"]

SEGMENT_BASE_URLS: Mapping[str, str] = {
    "us": "https://api.segment.io",
    "eu": "https://events.eu1.segmentapis.com",
}

_MAX_ID_LENGTH = 200


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
    ``path`` is reserved for split-URL variants.
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
        _check_unique([v.id for v in variants], f"{where}.variants")
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
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ConfigError(f"{where}.ends_at must be after starts_at")
        if self.seed is not None and not isinstance(self.seed, str):
            raise ConfigError(f"{where}.seed must be a string")

    def variant_by_id(self, variant_id: str) -> Variant | None:
        for variant in self.variants:
            if variant.id == variant_id:
                return variant
        return None

    def is_running(self, now: datetime) -> bool:
        """Running and inside its schedule at *now* (an aware datetime)."""
        if self.status != "running":
            return False
        if self.starts_at is not None and now < self.starts_at:
            return False
        return not (self.ends_at is not None and now >= self.ends_at)


@dataclass(frozen=True, slots=True)
class Conversion:
    """A goal: a CLICK on ``selector``, a PAGE_VIEW of ``url``, or a PROGRAMMATIC call."""

    id: str
    type: ConversionType
    one_per_visitor: bool = False
    selector: str | None = None
    url: str | None = None
    name: str | None = None

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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything :class:`~optibase_edge.Optibase` runs on, validated."""

    tests: tuple[Test, ...]
    conversions: tuple[Conversion, ...]
    secret_keys: tuple[str, ...]
    development: bool
    segment_write_key: str | None
    segment_region: Region
    segment_endpoint: str | None
    events_path: Path
    cookie_name: str = "optibase_vid"
    cookie_max_age: int = 400 * 24 * 3600
    cookie_secure: bool | None = None
    prefix: str = "/_optibase"
    inject_script: bool | None = None
    csp_nonce: str | Callable[[Mapping[str, Any]], str | None] | None = None
    dedupe_ttl: float = 400 * 24 * 3600.0
    max_buffer_events: int = 10_000
    max_buffer_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 100
    flush_interval: float = 0.5
    max_in_flight: int = 4
    request_timeout: float = 10.0
    retry_max_time: float = 300.0
    shutdown_timeout: float = 5.0
    spool_path: Path | None = None
    conversions_by_id: Mapping[str, Conversion] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conversions_by_id", {c.id: c for c in self.conversions})

    @property
    def segment_base_url(self) -> str:
        if self.segment_endpoint:
            return self.segment_endpoint.rstrip("/")
        return SEGMENT_BASE_URLS[self.segment_region]


_TUNABLES: dict[str, type] = {
    "cookie_name": str,
    "cookie_max_age": int,
    "cookie_secure": bool,
    "prefix": str,
    "inject_script": bool,
    "dedupe_ttl": float,
    "max_buffer_events": int,
    "max_buffer_bytes": int,
    "max_batch_events": int,
    "flush_interval": float,
    "max_in_flight": int,
    "request_timeout": float,
    "retry_max_time": float,
    "shutdown_timeout": float,
}
_OPTIONAL = {"cookie_secure", "inject_script"}  # None: decided per request / by the config
_POSITIVE = {
    "cookie_max_age",
    "dedupe_ttl",
    "max_buffer_events",
    "max_buffer_bytes",
    "max_batch_events",
    "flush_interval",
    "max_in_flight",
    "request_timeout",
    "retry_max_time",
}
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")


def build_settings(
    *,
    tests: Sequence[Test],
    conversions: Sequence[Conversion] = (),
    secret_keys: Sequence[str] | str | None = None,
    segment_write_key: str | None = None,
    segment_region: str | None = None,
    segment_endpoint: str | None = None,
    events_path: str | os.PathLike[str] | None = None,
    spool_path: str | os.PathLike[str] | None = None,
    csp_nonce: str | Callable[[Mapping[str, Any]], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    **tunables: Any,
) -> Settings:
    """Validate arguments (falling back to the environment) into :class:`Settings`."""
    env = os.environ if environ is None else environ
    tests = tuple(tests)
    conversions = tuple(conversions)
    for test in tests:
        if not isinstance(test, Test):
            raise ConfigError(f"tests must hold Test objects, got {test!r}")
    for conversion in conversions:
        if not isinstance(conversion, Conversion):
            raise ConfigError(f"conversions must hold Conversion objects, got {conversion!r}")
    _check_unique([t.id for t in tests], "tests")
    _check_unique([c.id for c in conversions], "conversions")

    if secret_keys is None:
        secret_keys = [k for k in env.get("OPTIBASE_SECRET_KEYS", "").split(",") if k.strip()]
    elif isinstance(secret_keys, str):
        secret_keys = [secret_keys]
    for key in secret_keys:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("secret_keys must be non-empty strings")
    keys = tuple(k.strip() for k in secret_keys)
    if segment_write_key is None:
        segment_write_key = env.get("OPTIBASE_SEGMENT_WRITE_KEY") or None
    if segment_write_key is not None and (
        not isinstance(segment_write_key, str) or not segment_write_key.strip()
    ):
        raise ConfigError("segment_write_key must be a non-empty string")
    if segment_write_key and not keys:
        raise ConfigError(
            "secret_keys is required when segment_write_key is set "
            "(set OPTIBASE_SECRET_KEYS or pass secret_keys=[...])"
        )
    development = not keys
    if development:
        keys = (os.urandom(32).hex(),)

    region = segment_region or env.get("OPTIBASE_SEGMENT_REGION") or "us"
    if not isinstance(region, str):
        raise ConfigError(f"segment_region must be 'us' or 'eu', got {region!r}")
    region = region.strip().lower()
    if region not in SEGMENT_BASE_URLS:
        raise ConfigError(f"segment_region must be 'us' or 'eu', got {region!r}")
    if segment_endpoint is not None and (
        not isinstance(segment_endpoint, str)
        or not re.match(r"^https?://[^/\s]+", segment_endpoint)
    ):
        raise ConfigError(f"segment_endpoint must be an http(s) base URL, got {segment_endpoint!r}")

    for name, value in tunables.items():
        if name not in _TUNABLES:
            raise ConfigError(f"unknown setting {name!r}")
        if value is None and name in _OPTIONAL:
            continue
        expected = _TUNABLES[name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            tunables[name] = value
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"{name} must be {expected.__name__}, got {value!r}")
        if name in _POSITIVE and not cast(float, value) > 0:  # "not >" also refuses NaN
            raise ConfigError(f"{name} must be > 0, got {value!r}")
    if not float(tunables.get("shutdown_timeout", 0.0)) >= 0:
        raise ConfigError("shutdown_timeout must be >= 0")
    if "cookie_name" in tunables and not _COOKIE_NAME.match(tunables["cookie_name"]):
        raise ConfigError(f"cookie_name {tunables['cookie_name']!r} is not a valid cookie name")
    if "prefix" in tunables:
        prefix = tunables["prefix"].rstrip("/")
        if not prefix.startswith("/") or len(prefix) < 2:
            raise ConfigError(
                f"prefix must be a path like '/_optibase', got {tunables['prefix']!r}"
            )
        tunables["prefix"] = prefix
    if csp_nonce is not None and not (isinstance(csp_nonce, str) or callable(csp_nonce)):
        raise ConfigError("csp_nonce must be a string or a callable taking the ASGI scope")

    return Settings(
        tests=tests,
        conversions=conversions,
        secret_keys=keys,
        development=development,
        segment_write_key=segment_write_key,
        segment_region=region,  # type: ignore[arg-type]
        segment_endpoint=segment_endpoint,
        events_path=Path(events_path or env.get("OPTIBASE_EVENTS_PATH") or "optibase-events.jsonl"),
        spool_path=Path(spool_path) if spool_path else None,
        csp_nonce=csp_nonce,
        **tunables,
    )


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ``optibase.toml`` file into keyword arguments for ``Optibase``.

    Layout: top-level settings, ``[[tests]]`` tables with ``[[tests.variants]]``,
    and ``[[conversions]]`` tables.
    """
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{os.fspath(path)!r} is not valid TOML: {exc}") from None
    kwargs: dict[str, Any] = dict(raw)
    kwargs["tests"] = [_test_from_table(t, i) for i, t in enumerate(raw.get("tests", []))]
    kwargs["conversions"] = [
        _from_table(Conversion, c, f"conversions[{i}]")
        for i, c in enumerate(raw.get("conversions", []))
    ]
    return kwargs


def _test_from_table(table: Any, index: int) -> Test:
    where = f"tests[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    table = dict(table)
    variants = table.pop("variants", [])
    if not isinstance(variants, list):
        raise ConfigError(f"{where}.variants must be an array of tables or strings")
    table["variants"] = [
        Variant(v) if isinstance(v, str) else _from_table(Variant, v, f"{where}.variants[{j}]")
        for j, v in enumerate(variants)
    ]
    test: Test = _from_table(Test, table, where)
    return test


def _from_table(cls: Any, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    try:
        return cls(**table)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_id(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_ID_LENGTH:
        raise ConfigError(f"{what} {value[:20]!r}... is longer than {_MAX_ID_LENGTH} characters")


def _check_unique(ids: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ConfigError(f"{where}: duplicate id {item!r}")
        seen.add(item)

"""Every setting :class:`~optibase_edge.Optibase` runs on: types, defaults, validation.

:class:`Settings` is the one place a setting is defined. Its annotations are
the types that are checked (the same checks for Python arguments, TOML and the
environment), its defaults are the defaults ``Optibase`` shows in its
signature, and a failed check raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ._config import ConfigError, Conversion, Test, check_unique
from ._proxies import IpMode, parse_networks

Region = Literal["us", "eu"]
CspNonce = str | Callable[[Mapping[str, Any]], str | None]
Consent = Callable[[Mapping[str, Any]], bool]
BotScreen = Callable[[str], bool]
SplitUrl = Literal["rewrite", "redirect"]
OnStoreError = Literal["send", "hold"]
CacheControl = Literal["private"]
# A collector budget: beacons that may come at once (the burst), then how many a second.
Budget = tuple[int, float]

SEGMENT_BASE_URLS: Mapping[str, str] = {
    "us": "https://api.segment.io",
    "eu": "https://events.eu1.segmentapis.com",
}

_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")
_HTTP_BASE_URL = re.compile(r"^https?://[^/\s]+")
_HOST_PATTERN = re.compile(r"^(?:\*\.)?[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\Z")
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_.~-]+\Z")
_DAY = 24 * 3600
MIN_SECRET_KEY_LENGTH = 32
_SECRET_FIELDS = frozenset({"secret_keys", "segment_write_key"})


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A ``redis://`` or ``rediss://`` URL, checked: a host, a valid port and database.

    What ``spool_path`` holds when the spool is a Redis list; a string with one
    of those schemes becomes one.
    """

    url: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"not a Redis URL: {exc}") from None
        if parts.scheme.lower() not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("a Redis URL is redis://HOST[:PORT][/DB] or rediss://...")
        database = parts.path[1:]
        if database and not (database.isascii() and database.isdigit()):
            raise ValueError(f"the database in a Redis URL is a number, not {database!r}")

    def redacted(self) -> str:
        """The URL without its password, for logs and errors."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + host))

    def __repr__(self) -> str:
        return f"RedisUrl({self.redacted()!r})"


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _not_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


def _budget(name: str, value: Budget | None) -> None:
    if value is not None and not (value[0] >= 1 and value[1] > 0):
        raise ConfigError(
            f"{name} must be (burst, per_second) with burst >= 1 and per_second > 0, "
            f"or None for no limit; got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Validated settings. Built by ``Optibase``; read everywhere else.

    Not ``slots=True`` on purpose: the class attributes are the defaults, and
    ``Optibase.__init__`` uses them as its own, so they are written once.
    """

    tests: tuple[Test, ...] = ()
    conversions: tuple[Conversion, ...] = ()
    # Newest last; empty means development mode (an ephemeral key, events to a file).
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    segment_write_key: str | None = field(default=None, repr=False)
    segment_region: Region = "us"
    segment_endpoint: str | None = None
    events_path: Path = Path("optibase-events.jsonl")
    # A file, or a Redis list (a redis:// or rediss:// URL) that outlives the host.
    spool_path: RedisUrl | Path | None = None
    cookie_name: str = "optibase_vid"
    cookie_max_age: int = field(default=400 * _DAY, metadata={"check": _positive})
    cookie_secure: bool | None = None
    prefix: str = "/_optibase"
    inject_script: bool | None = None
    csp_nonce: CspNonce | None = None
    dedupe_ttl: float = field(default=400.0 * _DAY, metadata={"check": _positive})
    # When a claim fails (the dedupe store is down): send unclaimed, or hold until it answers.
    on_store_error: OnStoreError = "send"
    max_buffer_events: int = field(default=10_000, metadata={"check": _positive})
    max_buffer_bytes: int = field(default=16 * 1024 * 1024, metadata={"check": _positive})
    max_batch_events: int = field(default=500, metadata={"check": _positive})
    flush_interval: float = field(default=0.5, metadata={"check": _positive})
    max_in_flight: int = field(default=4, metadata={"check": _positive})
    request_timeout: float = field(default=10.0, metadata={"check": _positive})
    retry_max_time: float = field(default=300.0, metadata={"check": _positive})
    shutdown_timeout: float = field(default=5.0, metadata={"check": _not_negative})
    # Experiment controls: where and for whom tests run, and how variants are served.
    hosts: tuple[str, ...] = ()
    consent: Consent | None = None
    honor_gpc: bool = True
    preview_param: str | None = "optibase_preview"
    split_url: SplitUrl = "rewrite"
    cache_control: CacheControl | None = "private"
    screen_bots: bool | BotScreen = True
    # Who the client is: the socket's peer, or what trusted proxies forward; what Segment gets.
    trusted_proxies: tuple[str, ...] = ()
    ip: IpMode = "full"
    # The collector's budgets, (burst, per_second): beacons a visitor (the signed cookie's ID) may
    # have recorded, and an address (as trusted_proxies says) may post; past one, a 429.
    collector_visitor_budget: Budget | None = field(default=(20, 1.0), metadata={"check": _budget})
    collector_ip_budget: Budget | None = field(default=(500, 20.0), metadata={"check": _budget})

    signing_keys: tuple[str, ...] = field(init=False, repr=False)
    conversions_by_id: Mapping[str, Conversion] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for spec in fields(self):
            if not spec.init:
                continue
            value = _conform(
                spec.name,
                getattr(self, spec.name),
                _HINTS[spec.name],
                secret=spec.name in _SECRET_FIELDS,
            )
            if "check" in spec.metadata:
                spec.metadata["check"](spec.name, value)
            object.__setattr__(self, spec.name, value)
        check_unique([t.id for t in self.tests], "tests")
        check_unique([c.id for c in self.conversions], "conversions")
        keys = tuple(key.strip() for key in self.secret_keys)
        if not all(keys):
            raise ConfigError("secret_keys must be non-empty strings")
        short = [i for i, key in enumerate(keys) if len(key) < MIN_SECRET_KEY_LENGTH]
        if short:
            # The key itself is never shown: only where it is and how long it is.
            raise ConfigError(
                f"secret_keys[{short[0]}] is too short (length {len(keys[short[0]])}; a secret "
                f"key needs at least {MIN_SECRET_KEY_LENGTH} characters; make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        object.__setattr__(self, "secret_keys", keys)
        if self.segment_write_key is not None and not self.segment_write_key.strip():
            raise ConfigError("segment_write_key must be a non-empty string")
        if self.segment_write_key and not keys:
            raise ConfigError(
                "secret_keys is required when segment_write_key is set "
                "(set OPTIBASE_SECRET_KEYS or pass secret_keys=[...])"
            )
        if self.segment_endpoint is not None and not _HTTP_BASE_URL.match(self.segment_endpoint):
            raise ConfigError(
                f"segment_endpoint must be an http(s) base URL, got {self.segment_endpoint!r}"
            )
        if not _COOKIE_NAME.match(self.cookie_name):
            raise ConfigError(f"cookie_name {self.cookie_name!r} is not a valid cookie name")
        if self.cookie_name.startswith(("__Host-", "__Secure-")):
            if self.cookie_secure is False:
                raise ConfigError(
                    f"cookie_secure: a cookie named {self.cookie_name!r} must be Secure "
                    "(browsers ignore it otherwise); leave cookie_secure unset or True"
                )
            object.__setattr__(self, "cookie_secure", True)
        prefix = self.prefix.rstrip("/")
        if not prefix.startswith("/") or len(prefix) < 2:
            raise ConfigError(f"prefix must be a path like '/_optibase', got {self.prefix!r}")
        object.__setattr__(self, "prefix", prefix)
        hosts = tuple(host.strip().lower().rstrip(".") for host in self.hosts)
        for host in hosts:
            if not _HOST_PATTERN.match(host):
                raise ConfigError(
                    f"hosts: {host!r} must be a host name like 'www.example.com' or "
                    "'*.example.com' (no scheme, port or path)"
                )
        object.__setattr__(self, "hosts", hosts)
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None
        if self.preview_param is not None and not _QUERY_NAME.match(self.preview_param):
            raise ConfigError(
                f"preview_param {self.preview_param!r} must be a query parameter name "
                "(letters, digits, '_', '-', '.', '~') or None"
            )
        object.__setattr__(self, "signing_keys", keys or (os.urandom(32).hex(),))
        object.__setattr__(self, "conversions_by_id", {c.id: c for c in self.conversions})

    @property
    def development(self) -> bool:
        """No secret key: an ephemeral one signs cookies, and events go to ``events_path``."""
        return not self.secret_keys

    @property
    def segment_base_url(self) -> str:
        if self.segment_endpoint:
            return self.segment_endpoint.rstrip("/")
        return SEGMENT_BASE_URLS[self.segment_region]


def field_names() -> tuple[str, ...]:
    """The settings a caller can give (what ``optibase.toml`` may hold at its top level)."""
    return tuple(spec.name for spec in fields(Settings) if spec.init)


def from_environment(
    environ: Mapping[str, str],
    *,
    secret_keys: Iterable[str] | str | None,
    segment_write_key: str | None,
    segment_region: str | None,
    events_path: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """The four settings that fall back to the environment when not given (None).

    ``OPTIBASE_SECRET_KEYS`` (comma-separated, newest last),
    ``OPTIBASE_SEGMENT_WRITE_KEY``, ``OPTIBASE_SEGMENT_REGION`` and
    ``OPTIBASE_EVENTS_PATH``.
    """
    if secret_keys is None:
        secret_keys = [k for k in environ.get("OPTIBASE_SECRET_KEYS", "").split(",") if k.strip()]
    elif isinstance(secret_keys, str):
        secret_keys = [secret_keys]
    if segment_write_key is None:
        segment_write_key = environ.get("OPTIBASE_SEGMENT_WRITE_KEY") or None
    region = segment_region or environ.get("OPTIBASE_SEGMENT_REGION") or "us"
    if isinstance(region, str):
        region = region.strip().lower()
    return {
        "secret_keys": secret_keys,
        "segment_write_key": segment_write_key,
        "segment_region": region,
        "events_path": events_path or environ.get("OPTIBASE_EVENTS_PATH") or Settings.events_path,
    }


# -- checking a value against its annotation -------------------------------------------


_HINTS: Mapping[str, Any] = typing.get_type_hints(Settings)


class _Refused(ConfigError):
    """A value that is recognisably meant as one option of a union, and is wrong."""


def _conform(name: str, value: object, hint: Any, *, secret: bool = False) -> Any:
    """*value* as the type *hint* describes (an int for a float, a str for a Path), or raise.

    The error shows the value, but only its type for a *secret*.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None):
                try:
                    return _conform(name, value, option, secret=secret)
                except _Refused:
                    raise
                except ConfigError:
                    continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin is tuple:
        if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
            items = tuple(value)
            # tuple[X, ...] holds any number of X; tuple[X, Y] exactly an X and a Y.
            item_hints = args[:1] * len(items) if args[-1] is Ellipsis else args
            if len(item_hints) == len(items):
                return tuple(
                    _conform(f"{name}[{i}]", item, item_hint, secret=secret)
                    for i, (item, item_hint) in enumerate(zip(items, item_hints, strict=True))
                )
    elif origin is Callable or hint is Callable:
        if callable(value):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is int or hint is str or hint is bool:
        if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
            return value
    elif hint is RedisUrl:
        if isinstance(value, RedisUrl):
            return value
        if isinstance(value, str) and value.lower().startswith(("redis://", "rediss://")):
            try:
                return RedisUrl(value)
            except ValueError as exc:
                # Final, not handed on to a Path: a mistyped URL must not name a file.
                raise _Refused(f"{name}: {exc}") from None
    elif hint is Path:
        if isinstance(value, str | os.PathLike) and os.fspath(value):
            return Path(value)
    elif isinstance(value, hint):
        return value
    shown = f"a {type(value).__name__}" if secret else repr(value)
    raise ConfigError(f"{name} must be {_describe(hint)}, got {shown}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple and args[-1] is Ellipsis:
        return f"a list of {_describe(args[0])}"
    if origin is tuple:
        return f"[{', '.join(_describe(a) for a in args)}]"
    if origin is Callable:
        return "a callable"
    if hint is type(None):
        return "None"
    if hint is float:
        return "a finite number"
    if hint is Path:
        return "a path"
    if hint is RedisUrl:
        return "a redis:// or rediss:// URL"
    names = {int: "an integer", str: "a string", bool: "true or false"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")

"""``optibase.toml``: the same settings as ``Optibase(...)``, read from a file.

Layout: top-level settings, ``[[tests]]`` tables with ``[[tests.variants]]``
(or a list of variant ids), and ``[[conversions]]`` tables. A field that is not
a setting is a :class:`ConfigError` naming the test or conversion it is in and
the closest real field, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

from ._config import ConfigError, Conversion, Test, Variant
from ._settings import field_names

_Definition = TypeVar("_Definition", Test, Variant, Conversion)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Keyword arguments for ``Optibase`` from the TOML file at *path*."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {name!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name!r} is not valid TOML: {exc}") from None
    _refuse_unknown(raw, field_names(), name)
    settings: dict[str, Any] = dict(raw)
    settings["tests"] = [_test(table, i) for i, table in enumerate(_tables(raw, "tests"))]
    settings["conversions"] = [
        _definition(Conversion, table, _where("conversions", i, table))
        for i, table in enumerate(_tables(raw, "conversions"))
    ]
    return settings


def _test(table: dict[str, Any], index: int) -> Test:
    where = _where("tests", index, table)
    table = dict(table)
    variants = table.pop("variants", [])
    if not isinstance(variants, list):
        raise ConfigError(f"{where}.variants must be an array of tables or strings")
    table["variants"] = [
        Variant(v) if isinstance(v, str) else _definition(Variant, v, f"{where}.variants[{j}]")
        for j, v in enumerate(variants)
    ]
    return _definition(Test, table, where)


def _definition(kind: type[_Definition], table: object, where: str) -> _Definition:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    _refuse_unknown(table, [spec.name for spec in fields(kind)], where)
    return kind(**table)


def _tables(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    tables = raw.get(key, [])
    if not isinstance(tables, list):
        raise ConfigError(f"{key} must be an array of tables ([[{key}]])")
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"{key}[{index}] must be a table")
    return tables


def _where(key: str, index: int, table: dict[str, Any]) -> str:
    """``tests[hero]`` when the table has a usable id, else ``tests[0]``."""
    table_id = table.get("id")
    return f"{key}[{table_id}]" if isinstance(table_id, str) and table_id else f"{key}[{index}]"


def _refuse_unknown(table: dict[str, Any], known: Sequence[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown field {key!r}{hint}")

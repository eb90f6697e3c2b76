"""The demo's HTML templates: files in ``demo_site/templates/`` with ``$name`` placeholders.

Rendering is :class:`string.Template` substitution: values go in verbatim, so
callers pass text already escaped for HTML (:func:`escape`), and a literal
``$`` is written ``$$``.  A placeholder without a value raises KeyError rather
than leaving a hole in the page.  Files are read once per process.
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path
from string import Template
from typing import Final

TEMPLATE_DIR: Final = Path(__file__).with_name("templates")

# Characters no HTML text may hold (controls, lone surrogates): shown as U+FFFD instead.
_UNSAFE_CHARS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@functools.cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / name).read_text(encoding="utf-8"))


def render(name: str, /, **values: object) -> str:
    """The template file *name* with every ``$placeholder`` replaced by its value."""
    return _template(name).substitute(values)


def escape(value: object, limit: int | None = None) -> str:
    """*value* as text safe in HTML text or a quoted attribute (inline SVG included).

    With *limit*, text longer than that many characters is cut and ends in "…".
    """
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(_UNSAFE_CHARS.sub("\ufffd", text), quote=True)

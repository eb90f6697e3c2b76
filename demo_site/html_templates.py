"""The demo's HTML templates: files in ``demo_site/templates/`` with ``$name`` placeholders.

Rendering is :class:`string.Template` substitution: values go in verbatim, so
callers pass text already escaped for HTML, and a literal ``$`` is written
``$$``.  A placeholder without a value raises KeyError rather than leaving a
hole in the page.  Files are read once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from string import Template
from typing import Final

TEMPLATE_DIR: Final = Path(__file__).with_name("templates")


@functools.cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / name).read_text(encoding="utf-8"))


def render(name: str, /, **values: object) -> str:
    """The template file *name* with every ``$placeholder`` replaced by its value."""
    return _template(name).substitute(values)

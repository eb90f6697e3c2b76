"""The client script served at ``{prefix}/script.js``, filled in for this site.

Built once per ``root_path`` (an app is mounted under few of them) from
``static/optibase.js`` and the configuration; its URL carries a hash of the
content, so a page never loads a stale script from a cache.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import NamedTuple

from ._config import ConversionType
from ._settings import Settings

_MAX_ROOT_PATHS = 16


class Script(NamedTuple):
    body: bytes
    etag: str  # quoted, as in the ETag header
    src: str  # the URL pages load it from


class ClientScript:
    """The script, its ETag and its URL, for an app mounted at a given root path."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._source = (
            resources.files("optibase_edge").joinpath("static/optibase.js").read_text("utf-8")
        )
        self._built: dict[str, Script] = {}

    def for_root(self, root_path: str) -> Script:
        found = self._built.get(root_path)
        if found is None:
            body = self._fill_in(root_path)
            digest = hashlib.blake2b(body, digest_size=12).hexdigest()
            src = f"{root_path}{self._settings.prefix}/script.js?v={digest}"
            if len(self._built) >= _MAX_ROOT_PATHS:  # root paths are few; stay bounded anyway
                self._built.clear()
            found = self._built[root_path] = Script(body, f'"{digest}"', src)
        return found

    def _fill_in(self, root_path: str) -> bytes:
        settings = self._settings
        config = {
            "collectUrl": f"{root_path}{settings.prefix}/collect",
            "variantsUrl": f"{root_path}{settings.prefix}/variants",
            "clicks": [
                {"id": c.id, "selector": c.selector}
                for c in settings.conversions
                if c.type is ConversionType.CLICK
            ],
        }
        # "</" cannot close an inline script if the config is ever inlined.
        encoded = json.dumps(config).replace("</", "<\\/")
        return self._source.replace("__OPTIBASE_CONFIG__", encoded, 1).encode("utf-8")

"""The ``hosts`` allow-list: on which hosts tests run at all (pure).

Like Optibase's domain list: a staging host, a preview deployment or the raw IP
of a server answers the same app, and none of their visits belong in the
results.
"""

from __future__ import annotations

from collections.abc import Sequence

_CACHE_SIZE = 256


class HostAllowList:
    """Host names (``www.example.com``) and subdomain wildcards (``*.example.com``).

    ``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not
    ``example.com`` itself (list both when both serve the site). The port in a
    Host header is ignored, and so are case and a trailing dot.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._exact = frozenset(p for p in patterns if not p.startswith("*."))
        self._suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))
        # A site answers a handful of Host values: remember each verdict (bounded,
        # since the header comes from the client).
        self._verdicts: dict[bytes, bool] = {}

    def allows(self, host_header: bytes | None) -> bool:
        """Whether a request with this ``Host`` header (None: absent) is on an allowed host."""
        if host_header is None:
            return False
        verdict = self._verdicts.get(host_header)
        if verdict is None:
            verdict = self._decide(host_header.decode("latin-1"))
            if len(self._verdicts) >= _CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[host_header] = verdict
        return verdict

    def _decide(self, host: str) -> bool:
        host = host.strip().lower()
        if host.startswith("["):  # an IPv6 literal: never a listed name
            return False
        name = host.partition(":")[0].rstrip(".")
        return name in self._exact or (bool(self._suffixes) and name.endswith(self._suffixes))

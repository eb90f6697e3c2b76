"""Caching headers for a response that depended on its visitor (pure).

A page rendered with one visitor's variant, cookie or script tag must never be
served by a shared cache (a CDN, a proxy) to anyone else. ``Vary: Cookie`` is
not the answer: every visitor's cookie differs, so it turns a cache into a
pass-through that still stores every copy. Marking the response ``private``
keeps the browser's own cache and keeps shared caches out.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

# Read by CDNs in preference to Cache-Control (Fastly, Akamai, Cloudflare and the
# RFC 9213 targeted field): left in place, they would cache the page anyway.
_CDN_HEADERS = frozenset(
    {b"cdn-cache-control", b"surrogate-control", b"cloudflare-cdn-cache-control"}
)
_REWRITTEN = _CDN_HEADERS | {b"cache-control", b"etag"}
_PRIVATE = (b"cache-control", b"private")
# Directives that only speak to shared caches, meaningless once private.
_SHARED_ONLY = frozenset({b"public", b"s-maxage", b"proxy-revalidate"})


def for_one_visitor(headers: Iterable[tuple[bytes, bytes]], *, drop_etag: bool) -> Headers:
    """*headers* made safe for a response meant for one visitor only.

    ``no-store`` and a plain ``private`` are kept as the app wrote them; otherwise
    ``public``, ``s-maxage`` and ``proxy-revalidate`` go, ``private`` leads, and
    the other directives (``max-age``, ``no-cache``...) stay for the browser. A
    ``private="Set-Cookie"`` naming fields would still let a shared cache store
    the body, so it counts as no ``private`` at all. CDN-targeted caching
    headers are removed. *drop_etag* removes the ETag, which described the
    app's body, not the one a script tag was injected into.
    """
    headers = list(headers)
    for name, _ in headers:
        if name.lower() in _REWRITTEN:
            return _rewrite(headers, drop_etag)
    # Most pages say nothing about caching: one header more, nothing to parse.
    headers.append(_PRIVATE)
    return headers


def _rewrite(headers: Headers, drop_etag: bool) -> Headers:
    kept: Headers = []
    directives: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"cache-control":
            directives.extend(d.strip() for d in value.split(b",") if d.strip())
        elif lower in _CDN_HEADERS or (drop_etag and lower == b"etag"):
            continue
        else:
            kept.append((name, value))
    kept.append((b"cache-control", _private(directives)))
    return kept


def not_stored(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """*headers* with ``Cache-Control: no-store`` and no ETag or CDN caching header."""
    kept = [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) != b"cache-control"
        and lower != b"etag"
        and lower not in _CDN_HEADERS
    ]
    kept.append((b"cache-control", b"no-store"))
    return kept


def _private(directives: list[bytes]) -> bytes:
    lowered = [d.lower() for d in directives]
    if b"no-store" in lowered or b"private" in lowered:
        return b", ".join(directives)
    rest = [
        d
        for d, low in zip(directives, lowered, strict=True)
        if low.partition(b"=")[0].strip() not in _SHARED_ONLY and not low.startswith(b"private")
    ]
    return b", ".join([b"private", *rest])

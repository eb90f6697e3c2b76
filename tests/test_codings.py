"""Content codings: a page decoded chunk by chunk, however cut, and coded back.

Bodies are coded by the standard library and brotli, as a server would, and
fed to :class:`Recoder` in chunks cut anywhere, one byte at a time included. A
body that is not validly coded must raise ``ValueError`` and nothing else: the
rewrite logs that and passes the rest of the body through.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import zlib
from collections.abc import Callable, Iterable

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optibase_edge._codings import DECODABLE, Recoder, recoder_for


def raw_deflate(data: bytes) -> bytes:
    """*data* as some servers send "deflate": without the zlib wrapper."""
    coder = zlib.compressobj(6, zlib.DEFLATED, -15)
    return coder.compress(data) + coder.flush()


# Name -> the Content-Encoding, how a server codes a body in it, how a client decodes it.
CODERS: dict[str, tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress, gzip.decompress),
    "deflate-zlib": ("deflate", zlib.compress, zlib.decompress),
    "deflate-raw": ("deflate", raw_deflate, lambda body: zlib.decompress(body, -15)),
    "br": ("br", brotli.compress, brotli.decompress),
}

PAGES = st.binary(max_size=2000) | st.text(max_size=2000).map(lambda t: (t * 3).encode())
CUTS = st.lists(st.integers(0, 4000), max_size=10)


def chunked(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    """*body* cut at *cuts* (one chunk without; an empty body is one empty chunk)."""
    bounds = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(bounds)] or [b""]


def bytewise(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


def decoded(coding: str, chunks: list[bytes]) -> bytes:
    """The chunks decoded by one :class:`Recoder`, the last one ending the body."""
    recoder = Recoder(coding)
    return b"".join(recoder.decode(chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks))


def test_what_is_decodable() -> None:
    assert DECODABLE == ("gzip", "deflate", "br")
    assert recoder_for(b" GZip ") is not None
    assert recoder_for(b"gzip, br") is None
    assert recoder_for(b"zstd") is None


@pytest.mark.parametrize("name", list(CODERS))
def test_a_body_fed_byte_by_byte_decodes(name: str) -> None:
    coding, code, _ = CODERS[name]
    page = b"<html><body>" + b"<p>hello</p>" * 50 + b"</body></html>"
    assert decoded(coding, bytewise(code(page))) == page


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(list(CODERS)), page=PAGES, cuts=CUTS, first=st.integers(0, 3))
def test_a_body_decodes_however_cut(name: str, page: bytes, cuts: list[int], first: int) -> None:
    coding, code, _ = CODERS[name]
    # A first chunk of a byte or two decides how "deflate" is wrapped: always tried.
    assert decoded(coding, chunked(code(page), [first, *cuts])) == page


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(list(CODERS)), pages=st.lists(PAGES, min_size=1, max_size=4))
def test_what_is_coded_chunk_by_chunk_decodes_whole(name: str, pages: list[bytes]) -> None:
    coding, _, decode = CODERS[name]
    recoder = Recoder(coding)
    body = b"".join(recoder.encode(page, i == len(pages) - 1) for i, page in enumerate(pages))
    if name == "deflate-raw":  # coded back with the zlib wrapper, as "deflate" names
        decode = zlib.decompress
    assert decode(body) == b"".join(pages)


@settings(max_examples=100, deadline=None)
@given(pages=st.lists(PAGES, min_size=2, max_size=4), cuts=CUTS)
def test_a_gzip_body_of_several_members_decodes_whole(pages: list[bytes], cuts: list[int]) -> None:
    body = b"".join(gzip.compress(page) for page in pages)
    assert decoded("gzip", chunked(body, cuts)) == b"".join(pages)


@settings(max_examples=100, deadline=None)
@given(page=PAGES, padding=st.integers(1, 600), cuts=CUTS)
def test_zero_padding_after_gzip_is_ignored(page: bytes, padding: int, cuts: list[int]) -> None:
    body = gzip.compress(page) + b"\0" * padding
    assert decoded("gzip", chunked(body, cuts)) == page
    assert decoded("gzip", [*chunked(body[:-padding], cuts), b"\0" * padding]) == page


@pytest.mark.parametrize("trailer", [b"junk", b"\0\0junk", b"\x1f\x8b\x08junk", b"\x1f"])
def test_anything_but_padding_after_gzip_is_a_value_error(trailer: bytes) -> None:
    body = gzip.compress(b"<p>page</p>") + trailer
    with pytest.raises(ValueError):
        decoded("gzip", [body])
    with pytest.raises(ValueError):
        decoded("gzip", bytewise(body))


@settings(max_examples=300, deadline=None)
@given(coding=st.sampled_from(DECODABLE), garbage=st.binary(max_size=300), cuts=CUTS)
def test_garbage_raises_a_value_error_or_nothing(
    coding: str, garbage: bytes, cuts: list[int]
) -> None:
    """Never another exception: the rewrite passes the body on after a ValueError only."""
    with contextlib.suppress(ValueError):
        decoded(coding, chunked(garbage, cuts))


@pytest.mark.parametrize("name", list(CODERS))
def test_garbage_from_the_start_is_a_value_error(name: str) -> None:
    coding = CODERS[name][0]
    with pytest.raises(ValueError):
        decoded(coding, [b"\xff" * 50])


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(list(CODERS)), page=PAGES, data=st.data())
def test_a_truncated_body_is_a_value_error_at_its_last_chunk(
    name: str, page: bytes, data: st.DataObject
) -> None:
    coding, code, _ = CODERS[name]
    body = code(page)
    truncated = body[: data.draw(st.integers(0, len(body) - 1), label="length")]
    *chunks, last = chunked(truncated, data.draw(CUTS, label="cuts"))
    recoder = Recoder(coding)
    for chunk in chunks:
        recoder.decode(chunk, False)
    with pytest.raises(ValueError):
        recoder.decode(last, True)

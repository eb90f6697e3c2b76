"""Undoing and redoing a response's content coding, so a compressed page can be rewritten.

A page sent gzip-, deflate- or (with the ``brotli`` package) br-coded is decoded
chunk by chunk, rewritten, and coded again the same way: the client accepted that
coding, as the app only chose it from the request's ``Accept-Encoding``. Pure: no
I/O, no Starlette.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

try:
    import brotli as _brotli
except ImportError:  # optional: without it, br is neither asked for nor rewritten
    _brotli = None

# What a page may be coded in for this library to rewrite it, in the order a proxy
# asks for them.
DECODABLE: tuple[str, ...] = (
    ("gzip", "deflate", "br") if _brotli is not None else ("gzip", "deflate")
)

# zlib's default level, and brotli's 5: each codes a 100 KB page in about a
# millisecond, where gzip 9 or brotli 11 (their maxima) take several times that for
# a few per cent less; the page is coded again on every request.
_GZIP_LEVEL = 6
_BROTLI_QUALITY = 5


class _Stream(Protocol):
    def __call__(self, data: bytes, final: bool) -> bytes: ...


class Recoder:
    """Decodes a body in one content coding and codes the rewritten body back into it.

    ``decode(chunk)`` gives the plain bytes of each chunk as it comes;
    ``encode(data, final)`` the coded bytes to send for the rewritten *data*,
    flushed so that each chunk can be sent at once (the last call ends the
    stream). A body that is not validly coded raises ``ValueError`` from
    ``decode``.
    """

    __slots__ = ("decode", "encode")

    def __init__(self, coding: str) -> None:
        self.decode: _Stream
        self.encode: _Stream
        if coding == "br":
            self.decode, self.encode = _brotli_pair()
        else:
            self.decode, self.encode = _zlib_pair(coding)


def recoder_for(content_encoding: bytes) -> Recoder | None:
    """A :class:`Recoder` for a ``Content-Encoding`` value, or None when it cannot be undone."""
    coding = content_encoding.strip().lower().decode("latin-1")
    if coding not in DECODABLE:
        return None  # zstd, compress, or codings stacked ("gzip, br"): left as they are
    return Recoder(coding)


def _zlib_pair(coding: str) -> tuple[_Stream, _Stream]:
    gzip = coding == "gzip"
    # 31: a gzip wrapper; 15: the zlib wrapper HTTP's "deflate" names.
    wbits = 31 if gzip else 15
    encoder = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, wbits)
    # For "deflate", made once its first two bytes have come: some servers send it
    # without the zlib wrapper, and those two bytes tell which. Deciding up front, as
    # browsers do, rather than retrying raw on an error, as bytes a first decoder
    # took from an earlier chunk would be lost to the second.
    decoder: Any = zlib.decompressobj(wbits) if gzip else None
    head = b""  # the bytes held until then

    def decode(data: bytes, final: bool) -> bytes:
        nonlocal decoder, head
        if decoder is None:
            head += data
            if len(head) < 2:
                if final:
                    raise ValueError(f"the {coding} body ends before its coded stream does")
                return b""
            decoder = zlib.decompressobj(15 if _zlib_wrapped(head) else -15)
            data, head = head, b""
        try:
            out: bytes = decoder.decompress(data)
            # A gzip body may be several members, one after another, then zero bytes
            # of padding, which browsers ignore.
            while gzip and decoder.eof and decoder.unused_data.strip(b"\0"):
                rest = decoder.unused_data
                decoder = zlib.decompressobj(wbits)
                out += decoder.decompress(rest)
        except zlib.error as exc:
            raise ValueError(f"not a valid {coding} body: {exc}") from None
        if final and not decoder.eof:
            raise ValueError(f"the {coding} body ends before its coded stream does")
        return out

    def encode(data: bytes, final: bool) -> bytes:
        out = encoder.compress(data)
        return out + encoder.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)

    return decode, encode


def _zlib_wrapped(head: bytes) -> bool:
    """Whether a "deflate" body starting with *head* (2 bytes at least) has the zlib wrapper.

    True when its first two bytes are a zlib header: the deflate method, and a
    check that makes them a multiple of 31.
    """
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0


def _brotli_pair() -> tuple[_Stream, _Stream]:
    assert _brotli is not None
    decoder = _brotli.Decompressor()
    encoder = _brotli.Compressor(quality=_BROTLI_QUALITY)

    def decode(data: bytes, final: bool) -> bytes:
        try:
            out: bytes = decoder.process(data)
        except _brotli.error as exc:
            raise ValueError(f"not a valid br body: {exc}") from None
        if final and not decoder.is_finished():
            raise ValueError("the br body ends before its coded stream does")
        return out

    def encode(data: bytes, final: bool) -> bytes:
        out: bytes = encoder.process(data) + (encoder.finish() if final else encoder.flush())
        return out

    return decode, encode

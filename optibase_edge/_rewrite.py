"""One HTML body rewritten: decoded, its variant blocks resolved, the tag put in, coded again."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._blocks import VariantBlocks, may_hold_blocks
from ._codings import Recoder
from ._injection import HtmlInjector

logger = logging.getLogger("optibase_edge")


class BodyRewrite:
    """Feeds a streamed HTML body through its stages, chunk by chunk.

    The stages, each optional: the :class:`Recoder` of a compressed body, the
    :class:`VariantBlocks` choosing with *choose* (not made for a body that
    comes whole and names no block), and the script tag (*make_injector*). The
    injector is made at the first chunk, once the blocks in that chunk are
    resolved, so the tag names the variants assigned by them: a held body is
    fed as one chunk.

    A body that is not validly coded is passed on as it came from where that is
    found, rewritten no further: it was broken before this library saw it. So is
    the rest of a body whose rewriting fails: the page is never turned into an
    error.
    """

    __slots__ = (
        "_blocks",
        "_choose",
        "_injector",
        "_make_injector",
        "_recoder",
    )

    def __init__(
        self,
        recoder: Recoder | None,
        choose: Callable[[str], str | None] | None,
        make_injector: Callable[[], HtmlInjector] | None,
    ) -> None:
        self._recoder = recoder
        self._choose = choose  # the blocks' choice; None: they are not resolved
        self._blocks: VariantBlocks | None = None
        self._make_injector = make_injector
        self._injector: HtmlInjector | None = None

    def feed(self, chunk: bytes, more_body: bool) -> bytes:
        """The bytes to send now for *chunk*; the last call (not *more_body*) releases the rest."""
        try:
            return self._feed(chunk, more_body)
        except ValueError as exc:  # the recoder's: not a validly coded body
            logger.warning("optibase: %s; the rest of it is passed on unrewritten", exc)
        except Exception:
            logger.exception("optibase: rewriting the page failed; the rest is passed on")
        self._recoder = self._blocks = self._injector = None
        self._choose = self._make_injector = None
        return chunk

    def _feed(self, chunk: bytes, more_body: bool) -> bytes:
        recoder = self._recoder
        data = chunk if recoder is None else recoder.decode(chunk, not more_body)
        if self._choose is not None:
            # Most pages come whole, and have no blocks: such a page is not scanned.
            if more_body or may_hold_blocks(data):
                self._blocks = VariantBlocks(self._choose)
            self._choose = None
        if self._blocks is not None:
            data = self._blocks.feed(data, more_body)
        if self._injector is None and self._make_injector is not None:
            try:
                self._injector = self._make_injector()
            except Exception:  # a csp_nonce callable, say: the page goes without the tag
                logger.exception("optibase: could not make the script tag; page sent without")
            self._make_injector = None
        if self._injector is not None:
            data = self._injector.feed(data, more_body)
        if recoder is not None:
            data = recoder.encode(data, not more_body)
        return data

    @property
    def changed(self) -> bool:
        """Whether what was fed is now other than the app's page: a block removed, the tag in.

        Final once the last chunk is fed. A body only decoded and coded again is
        not changed: the app's own bytes can be sent instead.
        """
        injector, blocks = self._injector, self._blocks
        return (injector is not None and injector.inserted) or (
            blocks is not None and any(not block.kept for block in blocks.blocks)
        )

"""9. Rewrite: MB/s of resolving server-side variant blocks, against the ways to do it in Python.

The page is :func:`demo_site.webflow_page.webflow_page` (a ~95 KB landing page as a
site builder publishes it, with two tests in variant blocks), in 16 KiB chunks
where the candidate streams. Every candidate keeps the variant ``bold`` of test
``landing_hero`` and ``control`` of ``landing_pricing``. Measured, in interleaved rounds, each
rewriting the page ``rewrite_pages`` times per round:

* ``ours``         -- :class:`optibase_edge._blocks.VariantBlocks`, fed the chunks;
* ``no blocks``    -- the same on the page with its block attributes renamed: the
                      scan that every HTML response without blocks pays;
* ``injector``     -- :class:`optibase_edge._injection.HtmlInjector` on the page, for
                      reference: it scans to ``</head>`` only, then passes chunks on;
* ``selectolax``   -- lexbor (C) through selectolax: parse the whole page, select
                      ``[data-optibase-test]``, decompose the others, serialize. It
                      does not stream, and serializing rewrites the whole document;
* ``html.parser``  -- the standard library's tokenizer, fed the chunks, the output
                      rebuilt from its callbacks (:class:`StdlibBlocks`, below);
* ``lol-html``     -- the lol-html-py binding of Cloudflare's streaming rewriter.
                      Its Python API has no element handlers (``AsyncRewriter``'s
                      signature takes buffer sizes only), so it cannot resolve
                      blocks: measured for reference, what streaming a page
                      through it costs, doing the one rewrite it has built in (it
                      drops ``<script>`` elements), through its asyncio interface.

Each candidate's output is compared with ours: whether it keeps every byte
outside the removed blocks. Ours must be byte-identical to the html.parser
rebuild (on this page, where every end tag is written as that rebuilds it),
and, parsed by lexbor, the document selectolax makes by removing elements
(tests/test_blocks.py checks it against two more references, and a browser).
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import Callable
from functools import partial
from html.parser import HTMLParser

from lol_html import AsyncRewriter
from selectolax.lexbor import LexborHTMLParser

from demo_site.webflow_page import webflow_page
from optibase_edge._blocks import VariantBlocks
from optibase_edge._injection import HtmlInjector

from .config import Config
from .report import Row, SectionResult
from .rounds import interleave, median, paired_ratio

CHUNK = 16 * 1024
CHOSEN = {"landing_hero": "bold", "landing_pricing": "control"}
SCRIPT_TAG = b'<script src="/_optibase/script.js" defer></script>'
VOID = frozenset(
    ("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr")
)


def chunks(page: bytes) -> list[bytes]:
    return [page[i : i + CHUNK] for i in range(0, len(page), CHUNK)]


def ours(parts: list[bytes]) -> bytes:
    blocks = VariantBlocks(CHOSEN.get)
    last = len(parts) - 1
    return b"".join(blocks.feed(part, more_body=i < last) for i, part in enumerate(parts))


def injector(parts: list[bytes]) -> bytes:
    inject = HtmlInjector(SCRIPT_TAG, b"/_optibase/script.js")
    last = len(parts) - 1
    return b"".join(inject.feed(part, more_body=i < last) for i, part in enumerate(parts))


def selectolax(page: bytes) -> bytes:
    tree = LexborHTMLParser(page)
    kept: dict[str, str] = {}
    removed: set[int] = set()
    for node in tree.css("[data-optibase-test]"):
        parent = node.parent
        while parent is not None and parent.mem_id not in removed:
            parent = parent.parent
        attributes = node.attributes
        test = attributes.get("data-optibase-test")
        variant = attributes.get("data-optibase-variant")
        if parent is not None or not test or not variant:
            continue  # in a removed block, or no block
        if kept.setdefault(test, CHOSEN.get(test) or variant) != variant:
            removed.add(node.mem_id)
            node.decompose()
    return (tree.html or "").encode()


class StdlibBlocks(HTMLParser):
    """Variant blocks on html.parser: fed chunks, the output rebuilt from its callbacks.

    Start tags come back as written (``get_starttag_text``), comments,
    declarations and text too; end tags are rebuilt as ``</name>``.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.kept: dict[str, str] = {}
        self.out: list[str] = []
        self.open: list[str] = []  # elements open in the outermost block
        self.removed = -1  # where in open the removed block is

    def emit(self, text: str) -> None:
        if self.removed < 0:
            self.out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values: dict[str, str | None] = {}
        for name, value in attrs:
            values.setdefault(name, value)
        test = values.get("data-optibase-test")
        variant = values.get("data-optibase-variant")
        block = removed = False
        if self.removed < 0 and test and variant:
            block = True
            removed = self.kept.setdefault(test, CHOSEN.get(test) or variant) != variant
        if removed and tag not in VOID:
            self.removed = len(self.open)
        if not removed:
            self.emit(self.get_starttag_text() or "")
        if tag not in VOID and (self.open or block):
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag("br", attrs)  # no content, whatever its name

    def handle_endtag(self, tag: str) -> None:
        removed = self.removed
        if tag in self.open:
            at = len(self.open) - 1 - self.open[::-1].index(tag)
            del self.open[at:]
            if at <= removed:
                self.removed = -1
            if at == removed:
                return  # the removed block's own end tag
        self.emit(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self.emit(data)

    def handle_comment(self, data: str) -> None:
        self.emit(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.emit(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.emit(f"<?{data}>")

    def handle_entityref(self, name: str) -> None:
        self.emit(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.emit(f"&#{name};")

    def unknown_decl(self, data: str) -> None:
        self.emit(f"<![{data}]>")

    def take(self) -> bytes:
        out = "".join(self.out).encode()
        self.out.clear()
        return out


def stdlib(parts: list[bytes]) -> bytes:
    parser = StdlibBlocks()
    decoder = codecs.getincrementaldecoder("utf-8")()
    out = []
    for part in parts:
        parser.feed(decoder.decode(part))
        out.append(parser.take())
    parser.close()
    out.append(parser.take())
    return b"".join(out)


async def lol_html(parts: list[bytes]) -> bytes:
    rewriter = AsyncRewriter()

    async def produce() -> None:
        for part in parts:
            await rewriter.feed(part)
        rewriter.close()

    async def consume() -> bytes:
        out = bytearray()
        async for part in rewriter:
            out += part
        return bytes(out)

    _, out = await asyncio.gather(produce(), consume())
    return out


def mb_per_s(rewrite: Callable[[], object], size: int, pages: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(pages):
        rewrite()
    return size * pages / ((time.perf_counter_ns() - t0) / 1e9) / 1e6


def run(cfg: Config) -> SectionResult:
    result = SectionResult("rewrite")
    page = webflow_page().encode()
    plain = page.replace(b"data-optibase-test", b"data-optibase-tset")
    parts, plain_parts = chunks(page), chunks(plain)
    loop = asyncio.new_event_loop()
    try:
        candidates: dict[str, Callable[[], bytes]] = {
            "ours": lambda: ours(parts),
            "no blocks": lambda: ours(plain_parts),
            "injector": lambda: injector(parts),
            "selectolax": lambda: selectolax(page),
            "html.parser": lambda: stdlib(parts),
            "lol-html": lambda: loop.run_until_complete(lol_html(parts)),
        }
        outputs = {name: rewrite() for name, rewrite in candidates.items()}
        raw = interleave(
            {
                name: partial(mb_per_s, rewrite, len(page), cfg.rewrite_pages)
                for name, rewrite in candidates.items()
            },
            cfg.rounds,
        )
    finally:
        loop.close()
    mine = outputs["ours"]
    rebuilt = outputs["html.parser"] == mine
    # Parsed by lexbor, our output is the document selectolax made by removing elements.
    same_dom = (LexborHTMLParser(mine).html or "").encode() == outputs["selectolax"]
    gone = mine.count(b"data-optibase-test") == 2 and page.count(b"data-optibase-test") == 4
    result.raw = {
        "page_bytes": len(page),
        "chunk_bytes": CHUNK,
        "pages_per_round": cfg.rewrite_pages,
        "rounds": cfg.rounds,
        "mb_per_s": raw,
        "output_bytes": {name: len(out) for name, out in outputs.items()},
        "same_output_as_ours": {name: out == mine for name, out in outputs.items()},
    }
    section = "9 rewrite"
    ours_mb = median(raw["ours"])

    def versus(name: str, peer: str, streams: bool, outside: str) -> Row:
        kept = "kept" if outputs[name] == mine else "changed"
        ratio = paired_ratio(raw["ours"], raw[name])
        return Row(
            section,
            f"MB/s vs {peer} (streams: {'yes' if streams else 'no'}; outside: {kept}, {outside})",
            f"{ours_mb:,.0f} MB/s",
            f"{name} {median(raw[name]):,.0f} MB/s",
            f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower",
        )

    result.rows += [
        Row(
            section,
            f"MB/s, {len(page) / 1000:.0f} KB page in 16 KiB chunks, 2 of its 4 blocks removed "
            "(streams: yes; outside: kept)",
            f"{ours_mb:,.0f} MB/s",
            f"without blocks {median(raw['no blocks']):,.0f} MB/s",
            f"{paired_ratio(raw['no blocks'], raw['ours']):.1f}x the time",
        ),
        versus("selectolax", "selectolax (lexbor)", False, "re-serialized"),
        versus("html.parser", "html.parser", True, "end tags rebuilt"),
        versus("lol-html", "lol-html, resolving nothing", True, "its scripts dropped"),
        Row(
            section,
            "MB/s vs HtmlInjector, same page (streams: yes; reads to </head>, adds a tag)",
            f"{ours_mb:,.0f} MB/s",
            f"injector {median(raw['injector']):,.0f} MB/s",
            f"{paired_ratio(raw['injector'], raw['ours']):.0f}x the time",
        ),
        Row(
            section,
            "output: 2 of 4 blocks gone, every other byte as written",
            "byte-identical" if rebuilt else "differs",
            f"html.parser rebuild; lexbor DOM {'the same' if same_dom else 'differs'}",
            "",
            "byte-identical, same DOM",
            rebuilt and same_dom and gone,
        ),
    ]
    return result

"""Markdown from MuPDF's structured text: headings from font sizes and weights and from the
PDF's outline (shared/extraction/outline.py), no layout model.

Speed is the point. MuPDF writes the structured text of a page as JSON in C (one record per
line: bounding box, the line's font, its text), and `json` reads it in C too, at about half
the cost of `page.get_text("dict")` (one Python dict per span). The line's font is that of its
first character, which is what headings, code blocks and list items need; inline bold or
italic is not rendered. Links come from the page's link list, tables from `find_tables()` when
the caller asks for them.

The text is untrusted: "<" and "[" in prose are escaped, so that a PDF cannot smuggle raw HTML
or a `javascript:` link into the Markdown; links are made only for http(s), mailto and ftp.

Pages are added one at a time (`MarkdownBuilder.add_page`) and keep only compact paragraph
records; heading levels are decided in `render()` once the body font size of the whole selection
is known.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pymupdf

from shared.extraction.outline import OutlineItem, outline_level, outline_titles

JSON_SCALE = 10.0
"""MuPDF's JSON writer prints integers; scaling by 10 keeps a tenth of a point."""

Rect = tuple[float, float, float, float]

_JSON = json.JSONDecoder(strict=False)
"""Control characters can reach the JSON unescaped; one decoder, not one per page."""

_BOLD_NAME = re.compile(r"bold|black|heavy|semibold|demi|(?:cm|sf|ec|tc|lm)bx|cmb\d", re.I)
_MONO_NAME = re.compile(
    r"mono|courier|typewriter|consol|menlo|inconsolata|cmtt|sftt|ectt|lmtt|txtt|cmsltt|pcr|"
    r"nimbusmon|fixedsys|sourcecode|firacode",
    re.I,
)
_BULLET_CHARS = "•◦▪▫‣\u2043●○■□►▶➢➤✓✔∙·\uf0b7\uf0a7\uf0d8\uf076\uf0fc\uf0a8"
_DASHES = "\u2013\u2014"
_BULLET = re.compile(rf"^(?:[{_BULLET_CHARS}]\s*|[-{_DASHES}*+]\s+)(?=\S)")
_NUMBERED = re.compile(r"^(?:\d{1,3}[.)]|\(\d{1,3}\)|\(?[a-z][)]|\([ivx]{1,5}\))\s+(?=\S)")
_LIST_FIRST = frozenset(_BULLET_CHARS + _DASHES + "-*+(0123456789")
_ONLY_BULLET = re.compile(rf"^\s*[{_BULLET_CHARS}{_DASHES}\-*]\s*$")
_NUMBER = re.compile(r"^\s*(?:\d{1,3}(?:\.\d{1,3})*\.?|[A-Z]\.?|[IVX]{1,5}\.?)\s*$")
"""A section number alone: "3", "3.1.1", "A", "IV."."""
_SECTION_HEAD = re.compile(r"^\d{1,3}(?:\.\d{1,3})+\.?\s+\w")
"""A title led by a multi-level section number: "3.1.1 UNIX"."""
_LEADER = re.compile(r"(?:\. ?){4,}|…{2,}|_{4,}")
"""Dot leaders of a table of contents."""
_LETTER = re.compile(r"[^\W\d_]")
_PAGE_NUMBER = re.compile(r"^\W*(?:\d{1,5}|[ivxlcdm]{1,8})\W*$", re.I)
_DIGITS = re.compile(r"\d+")
_NEEDS_ESCAPE = re.compile(r"^(?:#|>|[-+*]\s|\d+[.)]\s|`{3}|~{3}|={3,}\s*$|-{3,}\s*$)")
_HYPHENS = ("-", "\u00ad", "\u2010")
_SENTENCE_END = (".", "!", "?", ":")
_SAFE_SCHEMES = ("http://", "https://", "mailto:", "ftp://")

MAX_SIZE_LEVELS = 4
"""Heading levels given by font size; larger sizes beyond them (title pages) share level 1."""

HEADING_MAX_WIDTH = 0.8
"""A heading in body-size type is narrower than this share of the page's text width."""

MARGIN_BAND = 0.15
"""Running heads, feet and page numbers: a page's first or last line, within this fraction of
the page's height from its edge."""


@dataclass(slots=True)
class Line:
    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    bold: bool
    mono: bool
    text: str
    tabular: bool = False
    """Pieces of one baseline set far apart (a table row, a form): never a heading."""


@dataclass(slots=True)
class Block:
    x0: float
    y0: float
    x1: float
    y1: float
    lines: list[Line] = field(default_factory=list)
    table: str | None = None


@dataclass(slots=True)
class Para:
    kind: str
    """"p", "li", "code" or "table"."""
    text: str
    size: float = 0.0
    bold: bool = False
    lines: int = 1
    first_in_block: bool = True
    narrow: bool = True
    """Ends well before the block's right edge, or is the whole block (a heading shape)."""
    margin_key: str | None = None
    """Set for one-line paragraphs in the top or bottom band: running head/foot candidates."""
    tabular: bool = False
    """Made of table-like rows (see Line.tabular)."""
    bbox: list[float] | None = None
    """x0, y0, x1, y1 of its lines (PDF points, unrotated page, y down), when the builder
    keeps boxes (for `blocks`)."""


@dataclass(slots=True)
class _PageParas:
    number: int
    paras: list[Para]
    size: tuple[float, float] = (0.0, 0.0)
    """Width and height of the (unrotated) text page, in points."""
    figures: list[tuple[int, list[float]]] = field(default_factory=list)
    """Figures (for `blocks`) as (index of the paragraph they come before, bbox)."""


@dataclass(slots=True)
class Placed:
    """One paragraph as `render` placed it, in page order (every paragraph of a page, margin
    lines included): what the `blocks` output is made of."""

    page: int
    para: Para
    level: int
    """Heading level, 0 for none."""
    margin: bool
    """A running head or foot, or a page number: not in the Markdown."""
    start: int
    end: int
    """Its Markdown block's span in the rendered text (start == end when not in it)."""


@dataclass(frozen=True, slots=True)
class PageSpan:
    """Where one page's Markdown is in the document's: `markdown[start:end]` (offsets in
    characters, Unicode code points), its blocks in reading order; start == end for a page
    with none."""

    number: int
    start: int
    end: int


_font_cache: dict[str, tuple[bool, bool]] = {}


def _font_style(name: str, weight: str, family: str) -> tuple[bool, bool]:
    """(bold, mono) from MuPDF's font flags, helped by the name (TeX fonts often lack flags)."""
    base = name.rpartition("+")[2]
    bold = weight == "bold" or bool(_BOLD_NAME.search(base))
    mono = family == "monospace" or bool(_MONO_NAME.search(base))
    return bold, mono


def _json_blocks(textpage: pymupdf.TextPage) -> list[Block]:
    mupdf = pymupdf.mupdf
    buf = mupdf.fz_new_buffer(16384)
    out = mupdf.FzOutput(buf)
    mupdf.fz_print_stext_page_as_json(out, textpage.this, JSON_SCALE)
    out.fz_close_output()
    raw = mupdf.fz_buffer_extract(buf)
    # lone surrogates from broken ToUnicode maps are written as invalid UTF-8
    data = _JSON.decode(raw.decode("utf-8", "replace"))
    scale = JSON_SCALE
    cache = _font_cache
    blocks: list[Block] = []
    # the hot loop of the Markdown path: plain indexing, one cache lookup per line
    for b in data["blocks"]:
        if b["type"] != "text":
            continue
        lines: list[Line] = []
        for ln in b["lines"]:
            text = ln["text"]
            if not text or text.isspace():
                continue
            bb = ln["bbox"]
            font = ln["font"]
            fname = font["name"]
            style = cache.get(fname)
            if style is None:
                style = _font_style(fname, font["weight"], font["family"])
                if len(cache) < 4096:
                    cache[fname] = style
            x0 = bb["x"] / scale
            y0 = bb["y"] / scale
            y1 = y0 + bb["h"] / scale
            mono = style[1]
            if mono:
                text = text.rstrip()
            else:
                text = " ".join(text.split())
                if "<" in text or "[" in text:
                    text = _escape_inline(text)
                if lines:
                    prev = lines[-1]
                    if not prev.mono and abs(y1 - prev.y1) < 1.0 and x0 >= prev.x1 - 1.0:
                        # one baseline split by a wide gap: join (see _merge_rows)
                        _join_row(prev, x0, y0, x0 + bb["w"] / scale, text)
                        continue
            lines.append(
                Line(
                    x0,
                    y0,
                    x0 + bb["w"] / scale,
                    y1,
                    (font["size"] + 0.5) / scale,
                    style[0],
                    mono,
                    text,
                )
            )
        if lines:
            bb = b["bbox"]
            x0 = bb["x"] / scale
            y0 = bb["y"] / scale
            blocks.append(Block(x0, y0, x0 + bb["w"] / scale, y0 + bb["h"] / scale, lines))
    return blocks


def _dict_blocks(textpage: pymupdf.TextPage) -> list[Block]:
    """The same structure from `extractDICT()`: slower, used only if the JSON path fails."""
    blocks: list[Block] = []
    for b in textpage.extractDICT().get("blocks", ()):
        if b.get("type") != 0:
            continue
        lines: list[Line] = []
        for ln in b.get("lines", ()):
            spans = ln.get("spans") or ()
            text = "".join(s.get("text", "") for s in spans)
            if not spans or not text or text.isspace():
                continue
            first = spans[0]
            flags = int(first.get("flags", 0))
            bold, mono = _font_style(
                str(first.get("font", "")),
                "bold" if flags & pymupdf.TEXT_FONT_BOLD else "normal",
                "monospace" if flags & pymupdf.TEXT_FONT_MONOSPACED else "serif",
            )
            x0, y0, x1, y1 = ln["bbox"]
            lines.append(
                Line(
                    x0,
                    y0,
                    x1,
                    y1,
                    float(first.get("size", 0.0)),
                    bold,
                    mono,
                    text.rstrip() if mono else _escape_inline(" ".join(text.split())),
                )
            )
        if lines:
            x0, y0, x1, y1 = b["bbox"]
            blocks.append(Block(x0, y0, x1, y1, lines))
    _merge_rows(blocks)
    return blocks


def _escape_inline(text: str) -> str:
    return text.replace("<", "\\<").replace("[", "\\[")


def text_blocks(textpage: pymupdf.TextPage) -> list[Block]:
    """The text blocks of a page, each with its lines, in MuPDF's order."""
    try:
        return _json_blocks(textpage)
    except (ValueError, KeyError, TypeError, AttributeError, pymupdf.mupdf.FzErrorBase):
        return _dict_blocks(textpage)


def uri_links(page: pymupdf.Page) -> list[tuple[Rect, str]]:
    """External links of a page as (rect, uri), read with MuPDF's own link list (cheap even on
    pages with hundreds of internal links, unlike `page.get_links()`)."""
    mupdf = pymupdf.mupdf
    found: list[tuple[Rect, str]] = []
    link = mupdf.fz_load_links(page.this)
    while link.m_internal:
        uri = link.uri()
        if uri and mupdf.fz_is_external_link(uri):
            r = link.rect()
            found.append(((r.x0, r.y0, r.x1, r.y1), uri))
        link = link.next()
    if found and page.rotation:
        # text is extracted from the unrotated page (as `page.get_textpage` does)
        derotate = page.derotation_matrix
        rects = [(pymupdf.Rect(r) * derotate, uri) for r, uri in found]
        found = [((r.x0, r.y0, r.x1, r.y1), uri) for r, uri in rects]
    return found


def _safe_uri(uri: str) -> str | None:
    """Only schemes that are safe to make clickable; `javascript:` and friends stay text."""
    uri = uri.strip()
    if not uri.lower().startswith(_SAFE_SCHEMES):
        return None
    for char, code in ((" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E")):
        uri = uri.replace(char, code)
    return uri


def _link_lines(blocks: Sequence[Block], rect: Rect) -> list[Line]:
    """The prose lines a link rectangle touches."""
    x0, y0, x1, y1 = rect
    found = []
    for block in blocks:
        if block.y1 < y0 or block.y0 > y1 or block.x1 < x0 or block.x0 > x1:
            continue
        for line in block.lines:
            if not (line.mono or line.y1 < y0 or line.y0 > y1 or line.x1 < x0 or line.x0 > x1):
                found.append(line)
    return found


def _link_text(line: Line, piece: str, link_md: str) -> bool:
    pos = line.text.find(piece)
    if pos < 0 or link_md in line.text:
        return False
    line.text = line.text[:pos] + link_md + line.text[pos + len(piece) :]
    return True


def _apply_links(
    textpage: pymupdf.TextPage, blocks: Sequence[Block], links: Sequence[tuple[Rect, str]]
) -> None:
    for rect, raw_uri in links:
        uri = _safe_uri(raw_uri)
        if uri is None:
            continue
        lines = _link_lines(blocks, rect)
        if not lines:
            continue
        # a printed URL (the common case in manuals) is found without asking MuPDF
        printed = raw_uri.removeprefix("mailto:")
        if any(
            _link_text(line, candidate, f"<{uri}>")
            for candidate in dict.fromkeys((printed, printed.rstrip("/")))
            for line in lines
        ):
            continue
        try:
            # C-level copy; TextPage.extractTextbox walks every character in Python
            box = pymupdf.mupdf.fz_copy_rectangle(textpage.this, pymupdf.mupdf.FzRect(*rect), 0)
        except (RuntimeError, ValueError, TypeError, pymupdf.mupdf.FzErrorBase):
            continue
        for raw_piece in box.splitlines():
            # MuPDF copies the characters the box touches, often with trailing punctuation
            piece = _escape_inline(" ".join(raw_piece.split()).rstrip(".,;"))
            if not piece:
                continue
            if piece.rstrip("/") in (raw_uri.rstrip("/"), printed.rstrip("/")):
                link_md = f"<{uri}>"
            else:
                anchor = piece.replace("]", "\\]")
                link_md = f"[{anchor}]({uri})"
            for line in lines:
                if _link_text(line, piece, link_md):
                    break


_RTL_LETTER = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
RTL_SAMPLE = 4000
"""Characters of a page looked at for its dominant script."""


def _right_to_left(blocks: Sequence[Block]) -> bool:
    """Whether most letters of the page (a sample) are of a right-to-left script."""
    rtl = letters = 0
    for block in blocks:
        for line in block.lines:
            text = line.text
            letters += len(_LETTER.findall(text))
            rtl += len(_RTL_LETTER.findall(text))
            if letters >= RTL_SAMPLE:
                return rtl * 2 > letters
    return rtl * 2 > letters


def _reading_order(blocks: list[Block], width: float, height: float) -> list[Block]:
    """MuPDF's order, except on two-column pages: each column top to bottom, with full-width
    blocks (titles, figures across both columns) cutting the page into bands; the right column
    first when the page's text is mostly of a right-to-left script (Hebrew, Arabic, Persian)."""
    if len(blocks) < 4 or width <= 0:
        return blocks
    mid = width / 2
    tol = width * 0.02
    left = [b for b in blocks if b.x1 <= mid + tol and b.x0 < mid - tol]
    right = [b for b in blocks if b.x0 >= mid - tol and b.x1 > mid + tol]
    if len(left) < 2 or len(right) < 2:
        return blocks
    for column in (left, right):
        tall = sum(b.y1 - b.y0 for b in column)
        wide = sum(b.x1 - b.x0 for b in column) / len(column)
        if tall < 0.3 * height or wide < 0.3 * width:
            return blocks
    if _right_to_left(blocks):
        left, right = right, left
    in_columns = {id(b) for b in left} | {id(b) for b in right}
    full = sorted((b for b in blocks if id(b) not in in_columns), key=lambda b: b.y0)
    left.sort(key=lambda b: b.y0)
    right.sort(key=lambda b: b.y0)
    ordered: list[Block] = []
    li = ri = 0
    for cut in full:
        while li < len(left) and left[li].y0 < cut.y0:
            ordered.append(left[li])
            li += 1
        while ri < len(right) and right[ri].y0 < cut.y0:
            ordered.append(right[ri])
            ri += 1
        ordered.append(cut)
    ordered.extend(left[li:])
    ordered.extend(right[ri:])
    return ordered


def _join_text(text: str, nxt: str) -> str:
    """Two lines of one paragraph; a word hyphenated at the line end is put back together."""
    if text.endswith(_HYPHENS) and len(text) > 1 and text[-2].isalpha() and nxt[:1].islower():
        return text[:-1] + nxt
    return f"{text} {nxt}"


def _join(lines: Sequence[Line]) -> str:
    text = lines[0].text
    for line in lines[1:]:
        text = _join_text(text, line.text)
    return text


def _code(lines: Sequence[Line]) -> str:
    """Code lines with their indentation; fragments on one baseline become one line."""
    left = min(line.x0 for line in lines)
    widths = sorted(
        (line.x1 - line.x0) / len(stripped)
        for line in lines
        if len(stripped := line.text.strip()) >= 4
    )
    char_w = widths[len(widths) // 2] if widths else lines[0].size * 0.52
    rows: list[tuple[float, list[Line]]] = []
    for line in sorted(lines, key=lambda ln: ln.y1):
        if rows and abs(rows[-1][0] - line.y1) <= 1.5:
            rows[-1][1].append(line)
        else:
            rows.append((line.y1, [line]))
    out = []
    for _, row in rows:
        text = ""
        for frag in sorted(row, key=lambda ln: ln.x0):
            body = frag.text.lstrip()
            # leading spaces that are glyphs are inside the line's box already
            column = round((frag.x0 - left) / char_w) if char_w > 0 else 0
            column += len(frag.text) - len(body)
            column = max(len(text) + (1 if text else 0), min(column, 120))
            text = text.ljust(column) + body.rstrip()
        out.append(text)
    return "\n".join(out)


class _ParaCollector:
    """Splits the lines of one page's blocks into paragraphs, list items and code runs."""

    def __init__(
        self,
        top: float,
        bottom: float,
        text_width: float,
        out: list[Para],
        sizes: dict[float, int],
    ) -> None:
        self.top = top
        """Lines starting above this (the page's first lines) may be running heads."""
        self.bottom = bottom
        """Lines ending below this (the page's last lines) may be running feet."""
        self.max_heading_width = HEADING_MAX_WIDTH * text_width
        self.out = out
        self.sizes = sizes
        """Characters per font size (rounded to half points), for the body size."""
        self.code: list[Line] = []
        """Code lines not yet written: display code often spans several MuPDF blocks."""
        self.blocks: Sequence[Block] = ()
        """All blocks of the page, to tell table rows from headings."""
        self.boxes = False
        """Keep each paragraph's bounding box (the `blocks` output)."""

    def block(self, block: Block) -> None:
        """Split one block into paragraphs."""
        lines = block.lines
        sizes = self.sizes
        if len(lines) == 1:  # the most common block: a heading, a label, a short line
            line = lines[0]
            if line.mono:
                self._flush("code", lines, True, block.x1, last_in_block=True)
            else:
                sizes[line.size] = sizes.get(line.size, 0) + len(line.text)
                self._flush(_list_kind(line.text), lines, True, block.x1, last_in_block=True)
            return
        monos = [line.mono for line in lines]
        # a prose line that merely starts with `code` is not a code block
        mixed = any(monos) and not all(monos)
        last = len(lines) - 1
        list_first = _LIST_FIRST
        run: list[Line] = []
        kind = ""
        first = True
        bx0 = block.x0
        bx1 = block.x1
        for i, line in enumerate(lines):
            text = line.text
            if line.mono and not (
                mixed and (i == 0 or not monos[i - 1]) and (i == last or not monos[i + 1])
            ):
                k = "code"
            else:
                # sizes come from MuPDF in tenths of a point: few distinct values
                sizes[line.size] = sizes.get(line.size, 0) + len(text)
                k = _list_kind(text) if text[0] in list_first or text[1:2] == ")" else "p"
            if run:
                prev = run[-1]
                brk = False
                if k == "code" or kind == "code":
                    brk = k != kind
                elif (
                    k == "li"
                    or abs(line.size - prev.size) > 0.6
                    or line.y0 - prev.y1 > 0.8 * max(line.size, 1.0)
                ):
                    brk = True
                elif line.bold != prev.bold:
                    # a bold line after a heading-like one starts anew; a bold word at the
                    # start of a line inside a sentence does not
                    brk = prev.x1 < bx1 - 2.5 * prev.size or prev.text.endswith(_SENTENCE_END)
                elif kind == "li":
                    brk = line.x0 < run[0].x0 - 1.0
                else:
                    indented = line.x0 > bx0 + 0.9 * line.size and prev.x0 <= bx0 + 1.0
                    short = prev.x1 < bx1 - 2.5 * prev.size and prev.text.endswith(_SENTENCE_END)
                    # table-of-contents lines stay lines
                    brk = indented or short or _has_leader(prev.text)
                if brk:
                    self._flush(kind, run, first, bx1, last_in_block=False)
                    first = False
                    run = []
            if not run:
                kind = k
            run.append(line)
        if run:
            self._flush(kind, run, first, bx1, last_in_block=True)

    def finish(self) -> None:
        """Write what is pending at the end of the page."""
        self._flush_code()

    def _flush_code(self) -> None:
        if self.code:
            code = self.code
            head = code[0]
            para = Para("code", _code(code), head.size, head.bold, len(code))
            if self.boxes:
                para.bbox = _box(code)
            self.out.append(para)
            self.code = []

    def _flush(
        self, kind: str, run: list[Line], first: bool, bx1: float, *, last_in_block: bool
    ) -> None:
        head = run[0]
        if kind == "code":
            pending = self.code
            if pending and head.y0 - pending[-1].y1 > 1.5 * max(head.size, 1.0):
                self._flush_code()
            self.code.extend(run)
            return
        self._flush_code()
        text = head.text if len(run) == 1 else _join(run)
        out = self.out
        if (
            kind == "p"
            and text[:1].islower()
            and not head.tabular
            and out
            and out[-1].kind == "p"
            and not out[-1].narrow  # it ran to the margin: the sentence goes on
            and not out[-1].tabular
            and out[-1].bold == head.bold
            and out[-1].margin_key is None
            and abs(out[-1].size - head.size) <= 0.6
            and not out[-1].text.endswith(_SENTENCE_END)
        ):
            # a new MuPDF block, or a gap, in the middle of a sentence
            prev = out[-1]
            prev.text = _join_text(prev.text, text)
            prev.lines += len(run)
            prev.narrow = False
            if prev.bbox is not None:
                box = _box(run)
                bbox = prev.bbox
                prev.bbox = [
                    min(bbox[0], box[0]),
                    min(bbox[1], box[1]),
                    max(bbox[2], box[2]),
                    max(bbox[3], box[3]),
                ]
            return
        margin_key = None
        if len(run) == 1 and (head.y0 <= self.top or head.y1 >= self.bottom):
            margin_key = _DIGITS.sub("#", text.lower())
        # a heading ends its lines early; MuPDF gives the first line of a description item
        # ("Term: text running to the margin") a block of its own, so width counts too
        last = run[-1]
        narrow = (last_in_block or last.x1 < bx1 - 2.0 * head.size) and (
            last.x1 - last.x0 < self.max_heading_width or bool(_SECTION_HEAD.match(text))
        )
        tabular = head.tabular or (len(run) > 1 and any(line.tabular for line in run))
        if tabular:
            narrow = False
        if narrow and head.bold and len(self.blocks) >= 3:
            narrow = not _in_table_row(head, self.blocks)
        # lines of one run share boldness and (to 0.6 pt) size: the run breaks otherwise
        size = head.size if len(run) == 1 else max(line.size for line in run)
        para = Para(kind, text, size, head.bold, len(run), first, narrow, margin_key, tabular)
        if self.boxes:
            para.bbox = _box(run)
        self.out.append(para)


def _box(lines: Sequence[Line]) -> list[float]:
    """The bounding box of some lines."""
    if len(lines) == 1:
        line = lines[0]
        return [line.x0, line.y0, line.x1, line.y1]
    first = lines[0]
    x0, y0, x1, y1 = first.x0, first.y0, first.x1, first.y1
    # one pass, comparing as min()/max() do (the first of equal values stays)
    for line in lines[1:]:
        if line.x0 < x0:
            x0 = line.x0
        if line.y0 < y0:
            y0 = line.y0
        if line.x1 > x1:
            x1 = line.x1
        if line.y1 > y1:
            y1 = line.y1
    return [x0, y0, x1, y1]


def _has_leader(text: str) -> bool:
    if ". ." in text or "...." in text or "\u2026\u2026" in text or "____" in text:
        return bool(_LEADER.search(text))
    return False


def _list_kind(text: str) -> str:
    """ "li" for a list item ("- x", "• x", "1. x", "(a) x", "a) x"), else "p"."""
    first = text[0]
    if first in _LIST_FIRST:
        return "li" if _BULLET.match(text) or _NUMBERED.match(text) else "p"
    return "li" if text[1:2] == ")" and first.islower() else "p"


def _in_table_row(line: Line, blocks: Sequence[Block]) -> bool:
    """Whether two or more other blocks sit on the line's baseline (a table row)."""
    y = line.y1 - 0.5
    others = 0
    for block in blocks:
        if block.y0 <= y <= block.y1 and not (block.x0 <= line.x0 and line.x1 <= block.x1):
            others += 1
            if others >= 2:
                return True
    return False


def _join_row(prev: Line, x0: float, y0: float, x1: float, text: str) -> None:
    """Append a piece of the same baseline to `prev`; a wide gap makes it a table-like row,
    unless what stands apart is a bullet or a section number ("3.1.1      UNIX")."""
    if x0 - prev.x1 > 2.0 * max(prev.size, 1.0) and not (
        len(prev.text) <= 12 and (_ONLY_BULLET.match(prev.text) or _NUMBER.match(prev.text))
    ):
        prev.tabular = True
    prev.text = f"{prev.text} {text}"
    prev.x1 = x1
    if y0 < prev.y0:
        prev.y0 = y0


OCR_HEADING_RATIO = 1.3
"""On OCR pages, line heights vary from line to line: only this much larger counts as larger."""


def _calm_ocr(blocks: Sequence[Block]) -> None:
    """OCR text has one font and noisy sizes (from line heights): no code, no bold, and sizes
    snapped to the page's median unless clearly larger."""
    sizes = sorted(line.size for block in blocks for line in block.lines)
    median = sizes[len(sizes) // 2] if sizes else 0.0
    for block in blocks:
        for line in block.lines:
            if line.mono:
                line.mono = False
                line.text = _escape_inline(" ".join(line.text.split()))
            line.bold = False
            if line.size < median * OCR_HEADING_RATIO:
                line.size = median


def _merge_rows(blocks: Sequence[Block]) -> None:
    """Join the pieces MuPDF splits one baseline into within a block (wide gaps, table
    cells), so that each visual line is one line; code keeps its pieces for its columns.
    (The JSON path does this as it reads the lines.)"""
    for block in blocks:
        lines = block.lines
        if len(lines) < 2:
            continue
        out = [lines[0]]
        for line in lines[1:]:
            prev = out[-1]
            if (
                abs(line.y1 - prev.y1) < 1.0
                and line.x0 >= prev.x1 - 1.0
                and not line.mono
                and not prev.mono
            ):
                _join_row(prev, line.x0, line.y0, line.x1, line.text)
            else:
                out.append(line)
        if len(out) != len(lines):
            block.lines = out


def _merge_markers(blocks: list[Block]) -> list[Block]:
    """Put a bullet or a section number back in front of its text.

    Set apart by a wide gap ("3.1.1      UNIX", "•   item"), MuPDF gives the marker a line or
    block of its own; its text is the next line on the same baseline to its right.
    """
    if not any(len(line.text) <= 12 for block in blocks for line in block.lines):
        return blocks
    flat = [line for block in blocks for line in block.lines]
    merged: set[int] = set()
    for i in [i for i, line in enumerate(flat) if len(line.text) <= 12]:
        line = flat[i]
        text = line.text
        if line.mono or not (_ONLY_BULLET.match(text) or _NUMBER.match(text)):
            continue
        for nxt in flat[i + 1 : i + 4]:
            if abs(nxt.y1 - line.y1) <= 2.5 and line.x1 <= nxt.x0 + 1.0 and not nxt.mono:
                nxt.text = f"{text.strip()} {nxt.text}"
                nxt.x0 = line.x0
                merged.add(id(line))
                break
    if not merged:
        return blocks
    out = []
    for block in blocks:
        block.lines = [line for line in block.lines if id(line) not in merged]
        if block.lines:
            block.x0 = min(block.x0, *(line.x0 for line in block.lines))
            out.append(block)
    return out


class MarkdownBuilder:
    """Accumulates pages; `render()` returns the document's Markdown."""

    def __init__(self, *, boxes: bool = False) -> None:
        """`boxes`: keep the paragraphs' bounding boxes (for `blocks`; the Markdown alone
        goes without them, they cost it a few percent)."""
        self._pages: list[_PageParas] = []
        self._sizes: dict[float, int] = {}
        self.boxes = boxes
        self.outline: list[OutlineItem] = []
        """The PDF's outline (whole-document): its titles are headings (see .outline)."""

    def add_page(
        self,
        number: int,
        textpage: pymupdf.TextPage,
        page_rect: pymupdf.Rect,
        links: Sequence[tuple[Rect, str]] = (),
        tables: Sequence[tuple[Rect, str]] = (),
        *,
        ocr: bool = False,
        figures: Sequence[Rect] = (),
    ) -> None:
        """Add one page (1-based `number`) from its structured text.

        Args:
            number: the page number, 1-based.
            textpage: the page's text (native or OCR).
            page_rect: the rectangle of the text page (`textpage.rect`: unrotated), for
                columns and the running head/foot bands.
            links: external links as (rect, uri), e.g. from `uri_links(page)`.
            tables: tables found on the page as (bbox, markdown); their text is replaced by
                the table.
            ocr: the text comes from OCR, whose one font says nothing about code or emphasis.
            figures: figure candidates (`figures.textpage_with_figures`), kept when the
                builder keeps boxes; they never change the paragraphs or the Markdown.
        """
        blocks = text_blocks(textpage)
        if ocr:
            _calm_ocr(blocks)
        if tables:
            blocks = _place_tables(blocks, tables)
        blocks = _merge_markers(blocks)
        if links:
            _apply_links(textpage, blocks, links)
        width = page_rect.width
        height = page_rect.height
        ordered = _reading_order(blocks, width, height)
        paras: list[Para] = []
        text_width = width
        top = bottom = 0.0
        if blocks:
            text_width = max(b.x1 for b in blocks) - min(b.x0 for b in blocks)
            # running heads and feet: the page's first and last lines, near the edges
            top = min(min(b.y0 for b in blocks) + 1.0, page_rect.y0 + height * MARGIN_BAND)
            bottom = max(max(b.y1 for b in blocks) - 1.0, page_rect.y1 - height * MARGIN_BAND)
        collector = _ParaCollector(top, bottom, text_width, paras, self._sizes)
        collector.blocks = blocks
        collector.boxes = self.boxes
        placed_figures: list[tuple[int, list[float]]] = []
        before: dict[int, list[list[float]]] = {}
        if figures and self.boxes:
            before = _figure_places(figures, blocks, ordered, tables)
        for block in ordered:
            if before and id(block) in before:
                placed_figures += [(len(paras), box) for box in before.pop(id(block))]
            if block.table is not None:
                collector.finish()
                table = Para("table", block.table)
                if self.boxes:
                    table.bbox = [block.x0, block.y0, block.x1, block.y1]
                paras.append(table)
            else:
                collector.block(block)
        collector.finish()
        for rest in before.values():
            placed_figures += [(len(paras), box) for box in rest]
        self._pages.append(_PageParas(number, paras, (width, height), placed_figures))

    def state(self) -> dict[str, Any]:
        """What `render` needs, as JSON-able data: pages added in several processes (the ranges
        of a split document) render as one document through `from_states`. The outline is in
        it when set (in the range that starts the document: the outline is whole-document)."""
        state: dict[str, Any] = {
            "sizes": [[size, count] for size, count in self._sizes.items()],
            "pages": [
                {
                    "number": page.number,
                    "size": list(page.size),
                    "paras": [asdict(para) for para in page.paras],
                }
                | ({"figures": [[i, box] for i, box in page.figures]} if page.figures else {})
                for page in self._pages
            ],
        }
        if self.outline:
            state["outline"] = [list(item) for item in self.outline]
        return state

    @classmethod
    def from_states(cls, states: Iterable[Mapping[str, Any]]) -> MarkdownBuilder:
        """One builder holding the pages of every `state()`, in the order given."""
        builder = cls()
        for state in states:
            if "outline" in state and not builder.outline:
                builder.outline = [(int(a), str(b), int(c)) for a, b, c in state["outline"]]
            for size, count in state["sizes"]:
                builder._sizes[size] = builder._sizes.get(size, 0) + count
            builder._pages += [
                _PageParas(
                    page["number"],
                    [Para(**para) for para in page["paras"]],
                    tuple(page.get("size") or (0.0, 0.0)),
                    [(int(i), [float(v) for v in box]) for i, box in page.get("figures", ())],
                )
                for page in state["pages"]
            ]
        return builder

    def render(self) -> str:
        """The Markdown of every page added so far, in the order they were added."""
        return self._render(None)

    def render_pages(self) -> tuple[str, list[PageSpan]]:
        """The Markdown and where each page's part of it is (`PageSpan`, in page order)."""
        spans: list[PageSpan] = []
        return self._render(None, spans), spans

    def render_placed(self) -> tuple[str, list[Placed], list[PageSpan]]:
        """The Markdown, in reading order every paragraph with its heading level and its
        Markdown span, and each page's span: one layout pass for the Markdown and the
        `blocks`/`chunks` outputs."""
        placed: list[Placed] = []
        spans: list[PageSpan] = []
        return self._render(placed, spans), placed, spans

    def body_size(self) -> float:
        """The size (to half a point) of most characters of the pages added."""
        return _body_size(self._sizes)

    @property
    def page_sizes(self) -> list[tuple[int, float, float]]:
        """(number, width, height) of the pages added, in order."""
        return [(page.number, page.size[0], page.size[1]) for page in self._pages]

    def _render(self, placed: list[Placed] | None, spans: list[PageSpan] | None = None) -> str:
        body = _body_size(self._sizes)
        drop = _running_heads(self._pages)
        levels, bold_level = _heading_levels(self._pages, body, drop)
        titles = outline_titles(self.outline)
        out: list[str] = []
        prev_kind = ""
        pos = 0
        for page in self._pages:
            figures = page.figures if placed is not None else ()
            on_page = titles.get(page.number)
            fig = 0
            start = -1
            for n, para in enumerate(page.paras):
                while fig < len(figures) and figures[fig][0] <= n:
                    assert placed is not None
                    box = figures[fig][1]
                    placed.append(
                        Placed(page.number, Para("figure", "", bbox=box), 0, False, pos, pos)
                    )
                    fig += 1
                if para.margin_key is not None and (
                    para.margin_key in drop or _PAGE_NUMBER.match(para.text)
                ):
                    if placed is not None:
                        placed.append(Placed(page.number, para, 0, True, pos, pos))
                    continue
                level = _heading_level(para, body, levels, bold_level)
                if not level and on_page is not None and para.kind in _OUTLINE_KINDS:
                    level = outline_level(para.text, para.lines, on_page)
                if prev_kind == "li" and (level or para.kind != "li"):
                    out.append("\n")  # a list ends with a blank line
                    pos += 1
                if start < 0:
                    start = pos
                if level:
                    piece = f"{'#' * level} {para.text}\n\n"
                    prev_kind = "h"
                elif para.kind == "li":
                    piece = _list_item(para.text)
                    prev_kind = "li"
                elif para.kind == "code":
                    fence = "````" if "```" in para.text else "```"
                    piece = f"{fence}\n{para.text}\n{fence}\n\n"
                    prev_kind = "code"
                elif para.kind == "table":
                    piece = para.text.strip("\n") + "\n\n"
                    prev_kind = "table"
                else:
                    text = para.text
                    if _NEEDS_ESCAPE.match(text):
                        text = "\\" + text
                    piece = text + "\n\n"
                    prev_kind = para.kind
                out.append(piece)
                if placed is not None:
                    end = pos + len(piece.rstrip("\n"))
                    placed.append(Placed(page.number, para, level, False, pos, end))
                pos += len(piece)
            for _, box in figures[fig:]:
                assert placed is not None
                placed.append(Placed(page.number, Para("figure", "", bbox=box), 0, False, pos, pos))
            if spans is not None:
                spans.append(PageSpan(page.number, pos if start < 0 else start, pos))
        text = "".join(out).rstrip("\n") + "\n" if out else ""
        if spans:
            # The text's end lost its trailing blank line: the last spans end where it ends.
            spans[:] = [
                PageSpan(sp.number, min(sp.start, len(text)), min(sp.end, len(text)))
                for sp in spans
            ]
        return text


_OUTLINE_KINDS = ("p", "li")
"""Paragraphs that an outline title makes a heading (not code, not tables)."""


def _list_item(text: str) -> str:
    m = _BULLET.match(text)
    if m:
        return f"- {text[m.end() :]}\n"
    m = _NUMBERED.match(text)
    if m:
        marker = m.group(0).strip()
        if marker[:-1].isdigit():
            return f"{marker[:-1]}. {text[m.end() :]}\n"
        return f"- {marker} {text[m.end() :]}\n"
    return f"- {text}\n"


def _body_size(sizes: dict[float, int]) -> float:
    """The size (to half a point) of most characters."""
    if not sizes:
        return 0.0
    buckets: dict[float, int] = {}
    for size, count in sizes.items():
        key = round(size * 2) / 2
        buckets[key] = buckets.get(key, 0) + count
    return max(buckets.items(), key=lambda kv: (kv[1], -kv[0]))[0]


def _running_heads(pages: Sequence[_PageParas]) -> set[str]:
    """Margin lines that repeat on many pages (running heads and feet, page-number lines)."""
    if len(pages) < 2:
        return set()
    counts: dict[str, int] = {}
    for page in pages:
        seen = {p.margin_key for p in page.paras if p.margin_key is not None}
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
    threshold = max(2, int(len(pages) * 0.2))
    return {key for key, n in counts.items() if n >= threshold}


def _is_candidate(para: Para, drop: set[str]) -> bool:
    if para.kind not in ("p", "li") or para.lines > 4 or len(para.text) > 250:
        return False
    if para.margin_key is not None and para.margin_key in drop:
        return False
    if para.kind == "li" and not _NUMBERED.match(para.text):
        return False
    if _has_leader(para.text):
        return False
    return bool(_LETTER.search(para.text, 0, 40))


def _heading_threshold(body: float) -> float:
    return body + max(1.0, body * 0.1)


def _heading_levels(
    pages: Sequence[_PageParas], body: float, drop: set[str]
) -> tuple[list[float], int]:
    """Heading sizes, largest first, and the level of headings in bold body text."""
    threshold = _heading_threshold(body)
    found: set[float] = set()
    for page in pages:
        for para in page.paras:
            if para.size >= threshold and _is_candidate(para, drop):
                found.add(round(para.size * 2) / 2)
    clusters: list[float] = []
    for size in sorted(found, reverse=True):
        if not clusters or clusters[-1] - size > 0.6:
            clusters.append(size)
    return clusters, min(len(clusters), MAX_SIZE_LEVELS) + 1


def _heading_level(para: Para, body: float, levels: list[float], bold_level: int) -> int:
    """The heading level of a paragraph, 0 for none.

    Larger than the body: by size rank. At body size: bold, or led by a multi-level section
    number ("3.1.1 UNIX"), and shaped like a heading (short, alone on its lines, no final
    punctuation).
    """
    text = para.text
    if para.kind not in ("p", "li") or para.lines > 4 or len(text) > 250:
        return 0
    if para.kind == "li" and not _NUMBERED.match(text):
        return 0
    if not _LETTER.search(text, 0, 40) or _has_leader(text):
        return 0
    if para.size >= _heading_threshold(body) and levels:
        if len(text) > 40 and text.endswith((".", ",", ";")):
            return 0  # a sentence set large (a pull quote, a noisy OCR line), not a title
        size = round(para.size * 2) / 2
        rank = next((i for i, s in enumerate(levels) if size >= s - 0.6), len(levels) - 1)
        return max(1, rank + 1 - max(0, len(levels) - MAX_SIZE_LEVELS))
    if (
        abs(para.size - body) <= 1.0
        and para.lines <= 2
        and len(text) <= 120
        and para.narrow
        and para.first_in_block
        and not text.endswith((".", ",", ";", ":", "-"))
        and (para.bold or (para.lines == 1 and _SECTION_HEAD.match(text)))
    ):
        return bold_level
    return 0


FIGURE_TEXT_SHARE = 0.3
"""A drawing whose box is this much covered by text lines is a ruled table or a shaded listing,
not a figure."""


def _figure_places(
    figures: Sequence[Rect],
    blocks: Sequence[Block],
    ordered: Sequence[Block],
    tables: Sequence[tuple[Rect, str]],
) -> dict[int, list[list[float]]]:
    """The figures worth keeping, by the block (id) they come before in reading order: the first
    block below the figure's top that overlaps it horizontally (absent: the page's end, -1)."""
    out: dict[int, list[list[float]]] = {}
    for fx0, fy0, fx1, fy1 in figures:
        area = (fx1 - fx0) * (fy1 - fy0)
        if any(
            t[0] <= fx0 + 2 and t[1] <= fy0 + 2 and fx1 - 2 <= t[2] and fy1 - 2 <= t[3]
            for t, _ in tables
        ):
            continue  # a table's rules
        covered = 0.0
        for block in blocks:
            if block.x1 < fx0 or block.x0 > fx1 or block.y1 < fy0 or block.y0 > fy1:
                continue
            for line in block.lines:
                cx = (line.x0 + line.x1) / 2
                cy = (line.y0 + line.y1) / 2
                if fx0 <= cx <= fx1 and fy0 <= cy <= fy1:
                    covered += (line.x1 - line.x0) * (line.y1 - line.y0)
        if covered > FIGURE_TEXT_SHARE * area:
            continue
        at = next(
            (id(b) for b in ordered if b.y0 >= fy0 - 1.0 and b.x0 < fx1 and fx0 < b.x1),
            -1,
        )
        out.setdefault(at, []).append([fx0, fy0, fx1, fy1])
    return out


def _place_tables(blocks: list[Block], tables: Sequence[tuple[Rect, str]]) -> list[Block]:
    """Drop the lines inside each table's box and put the table where its box starts."""
    out: list[Block] = []
    for block in blocks:
        kept = []
        for line in block.lines:
            cx = (line.x0 + line.x1) / 2
            cy = (line.y0 + line.y1) / 2
            if not any(t[0] <= cx <= t[2] and t[1] <= cy <= t[3] for t, _ in tables):
                kept.append(line)
        if kept:
            block.lines = kept
            out.append(block)
    table_blocks = [Block(r[0], r[1], r[2], r[3], [], md) for r, md in tables]
    # tables go before the first block that starts below them (MuPDF's order is kept otherwise)
    for tb in sorted(table_blocks, key=lambda b: b.y0):
        at = next((i for i, b in enumerate(out) if b.table is None and b.y0 >= tb.y0), len(out))
        out.insert(at, tb)
    return out


def document_markdown(doc: pymupdf.Document, indexes: Sequence[int], flags: int) -> str:
    """Markdown of the given 0-based pages of an open document (no OCR, no tables)."""
    builder = MarkdownBuilder()
    for index in indexes:
        page = doc.load_page(index)
        textpage = page.get_textpage(flags=flags)
        builder.add_page(index + 1, textpage, textpage.rect, uri_links(page))
    return builder.render()


def headings(markdown: str) -> list[str]:
    """The heading texts of a Markdown document (ATX headings), emphasis markers removed."""
    found = []
    for line in markdown.splitlines():
        if line.startswith("#"):
            stripped = line.lstrip("#")
            if stripped[:1] == " " and len(line) - len(stripped) <= 6:
                found.append(stripped.strip().replace("**", "").replace("__", "").strip("_*` "))
    return found

"""The `blocks` output (`document.json`): the document as ordered, typed blocks with provenance.

The blocks come from the same layout pass as the Markdown (`MarkdownBuilder.render_placed`):
one paragraph record is one block, its heading level is the Markdown's, and its `md` span is
where its Markdown block sits in `document.md`. Running heads, feet and page numbers, which the
Markdown leaves out, are kept here as `page_header` / `page_footer` blocks (with no span).

The pydantic models below are the published schema (`pdfrelay schema document`); the output
itself is written from plain dicts in the models' field order (validating tens of thousands of
blocks would cost more than finding them), and the tests check that it validates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.extraction.markdown import MarkdownBuilder, Placed
from shared.extraction.outline import plain_text

DOCUMENT_SCHEMA = "pdfrelay.document/1"


class BlockKind(StrEnum):
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    LIST_ITEM = "list_item"
    TABLE = "table"
    FIGURE = "figure"
    CAPTION = "caption"
    CODE = "code"
    FOOTNOTE = "footnote"
    PAGE_HEADER = "page_header"
    PAGE_FOOTER = "page_footer"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


BBox = Annotated[
    list[float],
    Field(
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1 in PDF points; origin at the top left of the unrotated "
        "page, y downwards (MuPDF's page space)",
    ),
]


class DocBlock(_Model):
    """One block, in reading order."""

    id: str = Field(description='Stable id: "p{page}.b{n}", n counting the page\'s blocks')
    kind: BlockKind
    level: int | None = Field(default=None, ge=1, le=6, description="Headings only")
    page: int = Field(ge=1, description="1-based page number")
    bbox: BBox
    text: str = Field(description="Plain text (tables: their Markdown; code: with its indentation)")
    section: list[str] = Field(
        description="Titles of the headings above the block, outermost first (for a heading: "
        "its parents); empty for page headers and footers"
    )
    md: list[int] | None = Field(
        description="[start, end) character offsets (code points) of the block's Markdown in "
        "document.md; null for what the Markdown leaves out (page headers and footers, figures)"
    )
    caption: str | None = Field(
        default=None,
        description="Figures only (and only when found): the id of the caption block right "
        "below or above the figure",
    )
    figure: str | None = Field(
        default=None, description="Captions of a figure only: the id of that figure block"
    )


class DocPage(_Model):
    number: int = Field(ge=1)
    width: float
    height: float
    blocks: list[str] = Field(description="The page's block ids in reading order")


class OutlineEntry(_Model):
    level: int
    title: str
    page: int = Field(description="1-based target page; -1 or 0 when the entry has none")


class DocumentModel(_Model):
    """`document.json`: the `blocks` output."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={"$id": DOCUMENT_SCHEMA}
    )

    schema_: Literal["pdfrelay.document/1"] = Field(default="pdfrelay.document/1", alias="schema")
    pages: list[DocPage] = Field(description="The extracted pages, in order")
    outline: list[OutlineEntry] = Field(description="The PDF's own outline (bookmarks)")
    blocks: list[DocBlock] = Field(description="Every block of the pages, in reading order")


_CAPTION_TEXT = re.compile(
    r"^(?:fig(?:ure|\.)?|table|tab\.|abbildung|abb\.|tabelle|listing|рис(?:унок|\.)|таблица|图|表)"
    r"\s*[\dIVX]+[\d.\-]*(?:[:.\s]|$)",
    re.I,
)
_FOOTNOTE_TEXT = re.compile(r"^\s*(?:\d{1,3}|[*\u2020\u2021\u00a7\u00b9\u00b2\u00b3])\s*\S")
FOOTNOTE_BAND = 0.35
"""Footnotes: small type in this lower share of the page."""


_HEADING = BlockKind.HEADING.value
_PARAGRAPH = BlockKind.PARAGRAPH.value
_LIST_ITEM = BlockKind.LIST_ITEM.value
_TABLE = BlockKind.TABLE.value
_FIGURE = BlockKind.FIGURE.value
_CAPTION = BlockKind.CAPTION.value
_CODE = BlockKind.CODE.value
_FOOTNOTE = BlockKind.FOOTNOTE.value
_PAGE_HEADER = BlockKind.PAGE_HEADER.value
_PAGE_FOOTER = BlockKind.PAGE_FOOTER.value
"""The kinds as plain strings: what document.json holds, and cheaper to compare and to write
than the enum's members (whose `.value` is a descriptor call per block)."""


def _kind(place: Placed, height: float, body: float) -> str:
    """The block kind (a `BlockKind` value) of a placed paragraph."""
    para = place.para
    if place.margin:
        bbox = para.bbox
        middle = (bbox[1] + bbox[3]) / 2 if bbox else 0.0
        return _PAGE_HEADER if middle < height / 2 else _PAGE_FOOTER
    if place.level:
        return _HEADING
    kind = para.kind
    if kind == "table":
        return _TABLE
    if kind == "figure":
        return _FIGURE
    if kind == "code":
        return _CODE
    text = para.text
    if para.lines <= 3 and len(text) < 400 and _CAPTION_TEXT.match(text):
        return _CAPTION
    if (
        para.size < body - 0.9
        and para.bbox
        and para.bbox[1] > height * (1 - FOOTNOTE_BAND)
        and _FOOTNOTE_TEXT.match(text)
    ):
        return _FOOTNOTE
    return _LIST_ITEM if kind == "li" else _PARAGRAPH


CAPTION_GAP = 30.0
"""A caption starts at most this far (points) below a figure's bottom, or ends this far above
its top."""


def _link_captions(items: Sequence[dict[str, Any]]) -> None:
    """Each figure with the nearest caption right below (else above) it on its page, and that
    caption with the figure; a caption goes with one figure."""
    taken: set[str] = set()
    for figure in items:
        if figure["kind"] != "figure":
            continue
        fx0, fy0, fx1, fy1 = figure["bbox"]
        best: tuple[int, float, dict[str, Any]] | None = None
        for caption in items:
            if caption["kind"] != "caption" or caption["page"] != figure["page"]:
                continue
            if caption["id"] in taken:
                continue
            cx0, cy0, cx1, cy1 = caption["bbox"]
            if cx1 < fx0 or cx0 > fx1:
                continue
            if -2.0 <= cy0 - fy1 <= CAPTION_GAP:
                rank = (0, cy0 - fy1, caption)
            elif -2.0 <= fy0 - cy1 <= CAPTION_GAP:
                rank = (1, fy0 - cy1, caption)
            else:
                continue
            if best is None or rank[:2] < best[:2]:
                best = rank
        if best is not None:
            caption = best[2]
            taken.add(caption["id"])
            figure["caption"] = caption["id"]
            caption["figure"] = figure["id"]


def build_document(builder: MarkdownBuilder, placed: Sequence[Placed]) -> dict[str, Any]:
    """The `document.json` data of the builder's pages (`placed` from its `render_placed`)."""
    body = builder.body_size()
    heights = {number: height for number, _, height in builder.page_sizes}
    pages: dict[int, dict[str, Any]] = {
        number: {"number": number, "width": w, "height": h, "blocks": []}
        for number, w, h in builder.page_sizes
    }
    stack: list[tuple[int, str]] = []
    section: list[str] = []
    """The titles of `stack`: one list shared by the blocks of a section."""
    blocks: list[dict[str, Any]] = []
    figures_and_captions: list[dict[str, Any]] = []
    empty: list[str] = []
    page_number = -1
    index = 0
    height = 0.0
    page_blocks: list[str] | None = None
    append = blocks.append
    # the hot loop of the blocks: one pass, plain strings, the page's data fetched once a page
    for place in placed:
        para = place.para
        number = place.page
        if number != page_number:
            page_number = number
            index = 0
            height = heights.get(number, 0.0)
            page = pages.get(number)
            page_blocks = page["blocks"] if page is not None else None
        kind = _kind(place, height, body)
        level = place.level
        block_id = f"p{number}.b{index}"
        index += 1
        if kind == _TABLE:
            text = para.text.strip("\n")
        elif kind in (_CODE, _FIGURE):
            text = para.text
        else:
            text = plain_text(para.text)
        margin = place.margin
        if kind == _HEADING:
            while stack and stack[-1][0] >= level:
                stack.pop()
            parents = [title for _, title in stack]
            stack.append((level, text))
            section = [title for _, title in stack]
        else:
            parents = empty if margin else section
        block = {
            "id": block_id,
            "kind": kind,
            "level": level or None,
            "page": number,
            "bbox": para.bbox or [0.0, 0.0, 0.0, 0.0],
            "text": text,
            "section": parents,
            "md": None if margin or kind == _FIGURE else [place.start, place.end],
        }
        append(block)
        if kind in (_FIGURE, _CAPTION):
            figures_and_captions.append(block)
        if page_blocks is not None:
            page_blocks.append(block_id)
    if figures_and_captions:
        _link_captions(figures_and_captions)
    return {
        "schema": DOCUMENT_SCHEMA,
        "pages": list(pages.values()),
        "outline": [
            {"level": level, "title": title, "page": page} for level, title, page in builder.outline
        ],
        "blocks": blocks,
    }


CHUNK_SCHEMA = "pdfrelay.chunk/1"


class ChunkPart(_Model):
    block: str = Field(description="A block id of document.json")
    page: int
    bbox: BBox


class ChunkModel(_Model):
    """One line of `chunks.jsonl`: the `chunks` output."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra={"$id": CHUNK_SCHEMA}
    )

    id: str = Field(description='"c{n}", in document order')
    kind: Literal["text", "table"]
    text: str = Field(description="Exactly document.md[span[0]:span[1]]")
    heading_path: list[str] = Field(description="Titles of the headings the chunk sits under")
    pages: list[int]
    parts: list[ChunkPart] = Field(description="Its blocks, with page and bbox (whole block)")
    block_ids: list[str]
    span: list[int] = Field(
        min_length=2, max_length=2, description="[start, end) code points into document.md"
    )
    overlap: int = Field(description="Leading characters repeated from the previous chunk")
    chars: int
    tokens: int | None = Field(description="Approximate tokens (max_tokens budgets only)")
    table_header: str | None = Field(
        description="A table cut between rows: its header rows, for the pieces after the first"
    )

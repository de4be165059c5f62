"""Markdown, `blocks` and `chunks` from one layout pass: a whole run and a fan-out merge share
these pure functions, so that a merged document is byte for byte what one pass gives."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.extraction.chunks import build_chunks
from shared.extraction.document import build_document
from shared.extraction.jsonwrite import chunks_jsonl, document_json, plain_floats
from shared.extraction.markdown import MarkdownBuilder, PageSpan
from shared.models import ExtractOptions, MarkdownPage

MARKDOWN_ARTIFACT = "document.md"
DOCUMENT_ARTIFACT = "document.json"
CHUNKS_ARTIFACT = "chunks.jsonl"
LAYOUT_OUTPUTS = frozenset({"markdown", "blocks", "chunks"})
"""Outputs made from the Markdown builder's pages."""


@dataclass(frozen=True)
class LayoutFile:
    name: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class LayoutOutputs:
    markdown: str
    files: list[LayoutFile] = field(default_factory=list)
    """document.md (also for `blocks`/`chunks` alone: their spans point into it),
    document.json, chunks.jsonl, as asked."""
    pages: list[PageSpan] = field(default_factory=list)
    """Where each page's Markdown is in `markdown` (the result's `markdown_pages`)."""


def wants_layout(options: ExtractOptions) -> bool:
    return not LAYOUT_OUTPUTS.isdisjoint(options.outputs)


def markdown_pages(layout: LayoutOutputs) -> list[MarkdownPage]:
    """The result's `markdown_pages`: where each page's Markdown is."""
    return [MarkdownPage(number=p.number, start=p.start, end=p.end) for p in layout.pages]


def layout_outputs(builder: MarkdownBuilder, options: ExtractOptions) -> LayoutOutputs:
    """Render the builder's pages (with its outline) as the outputs `options` asks for."""
    outputs: set[str] = set(options.outputs)
    if not outputs & {"blocks", "chunks"}:
        markdown, spans = builder.render_pages()
        files = [LayoutFile(MARKDOWN_ARTIFACT, markdown.encode(), MARKDOWN_TYPE)]
        return LayoutOutputs(markdown, files, spans)
    # Blocks and chunks are trees of fresh dicts and lists without cycles: the cyclic
    # collector's passes over them would cost more than building them (8 ms against 60 ms for
    # the 6000 blocks of a 234-page manual).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _with_blocks(builder, options, outputs)
    finally:
        if collecting:
            gc.enable()


def _with_blocks(
    builder: MarkdownBuilder, options: ExtractOptions, outputs: set[str]
) -> LayoutOutputs:
    markdown, placed, spans = builder.render_placed()
    files = [LayoutFile(MARKDOWN_ARTIFACT, markdown.encode(), MARKDOWN_TYPE)]
    document = build_document(builder, placed)
    # one check of the boxes' numbers for both files: the chunks' parts are the blocks' boxes
    plain = plain_floats(block["bbox"] for block in document["blocks"])
    if "blocks" in outputs:
        data = document_json(document, plain)
        files.append(LayoutFile(DOCUMENT_ARTIFACT, data, "application/json"))
    if "chunks" in outputs:
        chunks = build_chunks(markdown, document["blocks"], options.chunking)
        data = chunks_jsonl(chunks, plain).encode()
        files.append(LayoutFile(CHUNKS_ARTIFACT, data, "application/x-ndjson"))
    return LayoutOutputs(markdown, files, spans)


MARKDOWN_TYPE = "text/markdown; charset=utf-8"


def merged_outputs(states: Iterable[Mapping[str, Any]], options: ExtractOptions) -> LayoutOutputs:
    """The outputs of the ranges' `MarkdownBuilder.state()`s, in page order, as one pass renders
    them (the range that starts the document brings the outline)."""
    return layout_outputs(MarkdownBuilder.from_states(states), options)

"""Markdown, `blocks` and `chunks` from one layout pass: a whole run and a fan-out merge share
these pure functions, so that a merged document is byte for byte what one pass gives."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.extraction.chunks import build_chunks, chunks_jsonl
from shared.extraction.document import build_document
from shared.extraction.markdown import MarkdownBuilder
from shared.models import ExtractOptions

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


def wants_layout(options: ExtractOptions) -> bool:
    return not LAYOUT_OUTPUTS.isdisjoint(options.outputs)


def layout_outputs(builder: MarkdownBuilder, options: ExtractOptions) -> LayoutOutputs:
    """Render the builder's pages (with its outline) as the outputs `options` asks for."""
    outputs: set[str] = set(options.outputs)
    if not outputs & {"blocks", "chunks"}:
        markdown = builder.render()
        files = [LayoutFile(MARKDOWN_ARTIFACT, markdown.encode(), MARKDOWN_TYPE)]
        return LayoutOutputs(markdown, files)
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
    markdown, placed = builder.render_placed()
    files = [LayoutFile(MARKDOWN_ARTIFACT, markdown.encode(), MARKDOWN_TYPE)]
    document = build_document(builder, placed)
    if "blocks" in outputs:
        data = document_json(document)
        files.append(LayoutFile(DOCUMENT_ARTIFACT, data, "application/json"))
    if "chunks" in outputs:
        chunks = build_chunks(markdown, document["blocks"], options.chunking)
        files.append(
            LayoutFile(CHUNKS_ARTIFACT, chunks_jsonl(chunks).encode(), "application/x-ndjson")
        )
    return LayoutOutputs(markdown, files)


MARKDOWN_TYPE = "text/markdown; charset=utf-8"
_DOCUMENT_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
)
"""document.json, compact (a tree of fresh dicts and lists: no cycle to look for)."""

ORJSON_FLOATS = (1e-4, 1e15)
"""Finite floats in [1e-4, 1e15) in magnitude (and zero) are written by orjson as by `json`
(the shortest repr, in fixed notation); below 1e-4 orjson keeps fixed notation where `json`
writes an exponent, and it writes null for NaN and the infinities."""


def document_json(document: dict[str, Any]) -> bytes:
    """document.json's bytes, exactly as `_DOCUMENT_ENCODER` writes them (UTF-8).

    orjson writes them about ten times faster (writing document.json was the largest part of
    the blocks' own cost, about 4 % of the Markdown's CPU); where the document holds a float
    it would print differently (ORJSON_FLOATS) or a value it refuses (an integer beyond 64
    bits, a lone surrogate), the standard encoder writes it as before.
    """
    if _orjson_floats(document):
        try:
            return orjson.dumps(document)
        except TypeError:  # orjson.JSONEncodeError is one
            pass
    return _DOCUMENT_ENCODER.encode(document).encode()


def _orjson_floats(document: dict[str, Any]) -> bool:
    """Whether every float of `build_document`'s dict (page sizes, block boxes; the rest is
    strings and integers) is one that orjson writes as `json` does."""
    low, high = ORJSON_FLOATS
    # comparisons only (no abs() call per number): most numbers are positive coordinates
    for page in document["pages"]:
        for v in (page["width"], page["height"]):
            if not (low <= v < high or v == 0 or -high < v <= -low):
                return False
    for block in document["blocks"]:
        for v in block["bbox"]:
            if not (low <= v < high or v == 0 or -high < v <= -low):
                return False
    return True


def merged_outputs(states: Iterable[Mapping[str, Any]], options: ExtractOptions) -> LayoutOutputs:
    """The outputs of the ranges' `MarkdownBuilder.state()`s, in page order, as one pass renders
    them (the range that starts the document brings the outline)."""
    return layout_outputs(MarkdownBuilder.from_states(states), options)

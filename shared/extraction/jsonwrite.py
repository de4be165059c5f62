"""document.json and chunks.jsonl written by orjson, byte for byte as `json` writes them.

Writing the two files with `json` was the largest part of what `blocks` and `chunks` cost on
top of the Markdown (a few percent of its CPU). orjson writes the same JSON several times
faster where its output is known to be `json`'s: strings (escaped alike, checked over every
code point), integers within 64 bits, and finite floats of magnitude 1e-4 to 1e15 or zero (the
shortest repr in fixed notation, as `repr`; below 1e-4 orjson keeps fixed notation where `json`
writes an exponent, and it writes NaN and the infinities as null). Anything else, and anything
orjson refuses (a lone surrogate, a larger integer), is written by `json` as before; the tests
compare both writers.

chunks.jsonl keeps `json`'s default separators (", ", ": "), which orjson cannot write: a
chunk's line is made by orjson without its three free-text values (text, heading path, table
header; the other strings are ids, kinds and keys, with no comma or colon), its separators
spaced out, and the free text put back as `json` escapes it. The counts of colons and commas
are checked against the chunk's shape, so that a string with a comma or a colon (which the
spacing would change) sends the line to `json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

import orjson

ORJSON_FLOATS = (1e-4, 1e15)
"""Nonzero floats of this magnitude range, [low, high), are written by orjson as by `json`."""

DOCUMENT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
"""document.json as it has always been written: compact (a tree of fresh dicts and lists, no
cycle to look for)."""
CHUNK_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
"""A line of chunks.jsonl as it has always been written (json's default separators)."""

_escape = json.encoder.encode_basestring
"""The string escape `json` itself uses without ensure_ascii (its C version)."""


def plain_floats(boxes: Iterable[Sequence[float]]) -> bool:
    """Whether every number of the boxes is one orjson writes as `json` does."""
    low, high = ORJSON_FLOATS
    try:
        for box in boxes:
            for v in box:
                # comparisons only (no abs() per number): most are positive coordinates
                if not (low <= v < high or v == 0 or -high < v <= -low):
                    return False
    except TypeError:  # not a number
        return False
    return True


def document_json(document: dict[str, Any], boxes_plain: bool | None = None) -> bytes:
    """document.json's bytes (UTF-8), exactly as `DOCUMENT_ENCODER` writes them, for
    `build_document`'s dict (its floats: page sizes and block boxes).

    `boxes_plain`: whether the blocks' boxes are known to pass `plain_floats`; None to check
    them here.
    """
    if boxes_plain is None:
        boxes_plain = plain_floats(block["bbox"] for block in document["blocks"])
    sizes = ((page["width"], page["height"]) for page in document["pages"])
    if boxes_plain and plain_floats(sizes):
        try:
            return orjson.dumps(document)
        except TypeError:  # orjson.JSONEncodeError is one
            pass
    return DOCUMENT_ENCODER.encode(document).encode()


_CHUNK_KEYS = (
    "id",
    "kind",
    "text",
    "heading_path",
    "pages",
    "parts",
    "block_ids",
    "span",
    "overlap",
    "chars",
    "tokens",
    "table_header",
)


def chunks_jsonl(chunks: Sequence[dict[str, Any]], boxes_plain: bool | None = None) -> str:
    """One chunk per line, each exactly as `CHUNK_ENCODER` writes it.

    `boxes_plain`: whether the parts' boxes are known to pass `plain_floats` (they are the
    blocks' boxes, which document_json checks already); None to check them here.
    """
    if boxes_plain is None:
        boxes_plain = plain_floats(part["bbox"] for chunk in chunks for part in chunk["parts"])
    lines: list[str] = []
    for chunk in chunks:
        line = _chunk_line(chunk) if boxes_plain else None
        lines.append(line if line is not None else CHUNK_ENCODER.encode(chunk))
        lines.append("\n")
    return "".join(lines)


def _chunk_line(chunk: dict[str, Any]) -> str | None:
    if tuple(chunk) != _CHUNK_KEYS:
        return None
    text = chunk["text"]
    path = chunk["heading_path"]
    header = chunk["table_header"]
    parts = chunk["parts"]
    pages = chunk["pages"]
    ids = chunk["block_ids"]
    span = chunk["span"]
    tokens = chunk["tokens"]
    if not (
        type(text) is str
        and (header is None or type(header) is str)
        and type(parts) is list
        and type(pages) is list
        and type(ids) is list
        and type(span) is list
        and all(type(n) is int for n in pages)
        and all(type(n) is int for n in span)
        and type(chunk["overlap"]) is int
        and type(chunk["chars"]) is int
        and (tokens is None or type(tokens) is int)
    ):
        return None  # numbers other than the parts' boxes: integers only
    try:
        # the parts' shapes, counted in C: three keys each, boxes of at least one number
        box_numbers = sum(map(len, map(_BBOX, parts)))
        if parts and (set(map(len, parts)) != {3} or min(map(len, map(_BBOX, parts))) < 1):
            return None
        # the free text out (as numbers no chunk has), the rest by orjson, compact
        line = orjson.dumps(chunk | {"text": -1, "heading_path": -2, "table_header": -3}).decode()
    except (TypeError, KeyError):
        return None
    colons = len(_CHUNK_KEYS) + 3 * len(parts)
    commas = (
        len(_CHUNK_KEYS)
        - 1
        + _gaps(pages)
        + _gaps(parts)
        + len(parts)
        + box_numbers
        + _gaps(ids)
        + _gaps(span)
    )
    if line.count(":") != colons or line.count(",") != commas:
        return None  # a comma or colon in an id, or a value of another shape
    line = line.replace(",", ", ").replace(":", ": ")
    line = line.replace('"heading_path": -2', '"heading_path": ' + CHUNK_ENCODER.encode(path), 1)
    if header is not None:
        line = line.replace('"table_header": -3', '"table_header": ' + _escape(header), 1)
    else:
        line = line.replace('"table_header": -3', '"table_header": null', 1)
    head, _, tail = line.partition('"text": -1')
    return f'{head}"text": {_escape(text)}{tail}'


_BBOX = itemgetter("bbox")


def _gaps(items: Any) -> int:
    """Commas between the items of a list (a box: a list or tuple)."""
    n = len(items)
    return n - 1 if n else 0

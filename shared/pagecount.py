"""A PDF's page count at submit time: cheap, and without opening it with a PDF library.

The page quota needs the count before a job is accepted, in the ingress process, where a hostile
PDF must not reach MuPDF (that only happens in worker processes, which may crash). So this reads
the raw bytes: the largest `/Count` of a `/Type /Pages` node (the root of the page tree), or
else the number of `/Type /Page` objects, also inside compressed object streams (inflated with a
bounded budget). It is an estimate: a file with incremental updates may show an older, larger
page tree (counted high, which errs on the safe side), and a damaged file may show none (None).
"""

from __future__ import annotations

import asyncio
import mmap
import re
import zlib
from collections.abc import Iterable

_PAGES_COUNT = re.compile(
    rb"/Type\s*/Pages(?![A-Za-z0-9])[^>]{0,4096}?/Count\s+(\d{1,9})"
    rb"|/Count\s+(\d{1,9})[^>]{0,4096}?/Type\s*/Pages(?![A-Za-z0-9])"
)
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
_OBJSTM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9])")
_STREAM = re.compile(rb"stream\r?\n")

INFLATE_BUDGET = 64 * 1024 * 1024
"""Bytes of object streams inflated per document at most (a zip bomb costs no more)."""
STREAM_WINDOW = 4096
"""How far after `/Type /ObjStm` its `stream` keyword may be (the rest of its dictionary)."""


def count_pages_in(data: bytes | mmap.mmap) -> int | None:
    """The page count of the PDF in `data`, estimated as the module docstring says."""
    chunks = [data, *_object_streams(data)]
    counts = [int(a or b) for chunk in chunks for a, b in _PAGES_COUNT.findall(chunk)]
    if counts and max(counts) > 0:
        return max(counts)
    pages = sum(len(_PAGE.findall(chunk)) for chunk in chunks)
    return pages or None


def _object_streams(data: bytes | mmap.mmap) -> Iterable[bytes]:
    budget = INFLATE_BUDGET
    for m in _OBJSTM.finditer(data):
        start = _STREAM.search(data, m.end(), m.end() + STREAM_WINDOW)
        if start is None:
            continue
        end = data.find(b"endstream", start.end())
        if end < 0 or budget <= 0:
            return
        try:
            inflated = zlib.decompressobj().decompress(data[start.end() : end], budget)
        except zlib.error:
            continue
        budget -= len(inflated)
        yield inflated


def count_pages_file(path: str) -> int | None:
    """`count_pages_in` over a file, memory-mapped (a 200 MB upload is not read into memory)."""
    with open(path, "rb") as fh:
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return None
        with mapped:
            return count_pages_in(mapped)


async def count_pages(path: str) -> int | None:
    """`count_pages_file` in a thread: the scan is CPU work."""
    return await asyncio.to_thread(count_pages_file, path)

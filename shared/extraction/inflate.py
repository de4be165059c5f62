"""A bound on decompression: the bytes a document's Flate streams inflate to, counted first.

MuPDF inflates streams as it needs them, and a few kilobytes can inflate to gigabytes (13.6 s of
CPU per GiB with the standard library's zlib; zlib-ng, used here, inflates the same streams
1.5-4.6x faster). Before any page work the worker inflates every stream of the file once, in chunks
(nothing is kept), also through stacked Flate layers (`[/FlateDecode /FlateDecode]`), and refuses
a document whose total passes `max_inflated_bytes` with DECOMPRESSION_LIMIT. The scan is linear
and stops as soon as the budget is spent, so a bomb costs at most the budget.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import cast

from zlib_ng import zlib_ng as zlib

from shared.errors import ErrorCode, PermanentError

STEP = 1 << 20
"""Bytes inflated per call: memory stays flat whatever a stream inflates to."""
MAX_LAYERS = 4
_ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_ZLIB_ERROR = cast(type[Exception], zlib.error)  # its stub declares an instance, not the class


class _Spent(Exception):
    pass


class _Counter:
    def __init__(self, budget: int) -> None:
        self.left = budget

    def feed(self, layers: list[zlib._Decompress], depth: int, data: bytes) -> None:
        """Inflate `data` through layer `depth` (and the layers under it), counting the output."""
        inflater = layers[depth]
        buf = data
        while buf:
            try:
                out = inflater.decompress(buf, STEP)
            except _ZLIB_ERROR:
                return  # not (or no longer) Flate: what came so far is counted
            buf = inflater.unconsumed_tail
            if not out:
                return
            self.left -= len(out)
            if self.left < 0:
                raise _Spent
            if depth + 1 == len(layers) and len(layers) < MAX_LAYERS and out[:2] in _ZLIB_HEADERS:
                layers.append(zlib.decompressobj())
            if depth + 1 < len(layers):
                self.feed(layers, depth + 1, out)


def stream_starts(data: bytes | mmap.mmap) -> Iterator[int]:
    """Where the data after every `stream` keyword begins: each `stream` (not `endstream`)
    followed by an end of line, anywhere in the file (inside other streams' data too).

    The matches of the regular expression `(?<!end)stream\r?\n`, found with `find`, which
    skips along at C speed where `re` tried every position (half of the scan's CPU).
    """
    at = data.find(b"stream")
    while at >= 0:
        after = at + len(b"stream")
        if at < 3 or data[at - 3 : at] != b"end":
            if data[after : after + 1] == b"\n":
                yield after + 1
            elif data[after : after + 2] == b"\r\n":
                yield after + 2
        # "stream" cannot overlap itself: the next one starts after this one
        at = data.find(b"stream", after)


def check_inflated(path: str, max_inflated_bytes: int | None) -> None:
    """Raises PermanentError (DECOMPRESSION_LIMIT) when the file's streams inflate to more than
    `max_inflated_bytes` (None: no limit)."""
    if max_inflated_bytes is not None:
        inflated_bytes(path, max_inflated_bytes)


def inflated_bytes(path: str, budget: int) -> int:
    """What the file's streams inflate to, counted up to `budget` (then PermanentError)."""
    counter = _Counter(budget)
    with open(path, "rb") as fh:
        try:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty
            return 0
        with data:
            try:
                for start in stream_starts(data):
                    end = data.find(b"endstream", start)
                    if end < 0:
                        end = len(data)
                    counter.feed([zlib.decompressobj()], 0, data[start:end])
            except _Spent:
                raise PermanentError(
                    f"the PDF's streams inflate to more than {budget} bytes "
                    "(PDFRELAY_MAX_INFLATED_BYTES)",
                    ErrorCode.DECOMPRESSION_LIMIT,
                ) from None
    return budget - counter.left

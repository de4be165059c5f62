"""A PDF's page count at submit time: cheap, bounded, and without a PDF library in the ingress.

The page quota needs the count before a job is accepted, in the ingress process, where a hostile
PDF must not reach MuPDF or stall the event loop. So `count_pages` runs the counter in a child
process of its own, with a time limit (`pagecount_timeout_s`) and a memory limit, and the counter
itself is linear in the bytes: it counts the page objects (`/Type /Page`, which every page must
have), also inside compressed object streams (inflated with a bounded budget), with names
unescaped first (`/P#61ge` is `/Page`). The page tree's `/Count` is not trusted (it may be
indirect or lie). Old revisions of a file with incremental updates are counted too, which errs
high (the safe side). When the count is unknown (no page objects, an object stream that cannot be
inflated, a budget exhausted, the child killed or timed out) the answer is None, and the quota
charges such a document as `max_pages`, never as 1.
"""

from __future__ import annotations

import contextlib
import mmap
import re
import sys
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9#])")
_OBJSTM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9#])")
_STREAM = re.compile(rb"stream\r?\n")
_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")

INFLATE_BUDGET = 64 * 1024 * 1024
"""Bytes of object streams inflated per document at most (a zip bomb costs no more)."""
STREAM_WINDOW = 4096
"""How far after `/Type /ObjStm` its `stream` keyword may be (the rest of its dictionary)."""
CHILD_MEMORY_BYTES = 1024 * 1024 * 1024
"""Address space of the counting child (the file is mapped, object streams inflated)."""
DEFAULT_TIMEOUT_S = 10.0


class _Unknown(Exception):
    """An object stream could not be read: its pages are unknown."""


def count_pages_in(data: bytes | mmap.mmap) -> int | None:
    """The page count of the PDF in `data`, as the module docstring says (None: unknown)."""
    try:
        chunks = [data, *_object_streams(data)]
    except _Unknown:
        return None
    pages = sum(len(_PAGE.findall(_unescape(chunk))) for chunk in chunks)
    return pages or None


def _unescape(chunk: bytes | mmap.mmap) -> bytes | mmap.mmap:
    """Name escapes (#xx) decoded; bytes elsewhere change too, which no name search minds."""
    if chunk.find(b"#") < 0:
        return chunk
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), chunk)


def _object_streams(data: bytes | mmap.mmap) -> Iterator[bytes]:
    budget = INFLATE_BUDGET
    for m in _OBJSTM.finditer(_unescape(data)):
        start = _STREAM.search(data, m.end(), m.end() + STREAM_WINDOW)
        if start is None:
            raise _Unknown
        end = data.find(b"endstream", start.end())
        if end < 0 or budget <= 0:
            raise _Unknown
        inflater = zlib.decompressobj()
        try:
            inflated = inflater.decompress(data[start.end() : end], budget)
        except zlib.error as exc:
            raise _Unknown from exc
        if inflater.unconsumed_tail:
            raise _Unknown  # over the budget: what is left is not counted, so nothing is
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


async def count_pages(path: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> int | None:
    """`count_pages_file` in a child process, killed after `timeout_s` (then None: unknown).

    Nothing of the scan runs in this process: neither the event loop nor another thread holding
    the GIL is stalled by a hostile file.
    """
    # Imported here, not at the top: the child runs this file, and importing asyncio was 45 of
    # its 80 ms of CPU per document (one per upload the page quota counts).
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",  # isolated, and without site-packages: the counter needs only the standard library
        "-S",
        __file__,
        path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        await _kill(proc)
        return None
    except BaseException:
        await _kill(proc)
        raise
    text = out.decode("ascii", errors="replace").strip()
    return int(text) if proc.returncode == 0 and text.isdigit() and int(text) > 0 else None


async def _kill(proc: asyncio.subprocess.Process) -> None:
    import asyncio  # see count_pages

    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(proc.wait())


def _main(argv: list[str]) -> int:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    pages = count_pages_file(argv[0])
    print(pages or 0)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""Receiving a PDF upload: stream it to a spool file, checking magic bytes and size on the way."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

from shared.errors import EmptyFile, FileTooLarge, NotAPdf

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024
"""The PDF header may follow a little junk; readers accept it within the first 1 KiB."""
WRITE_BYTES = 256 * 1024
"""The spool file is written in a thread, this much at a time (not on the event loop)."""


@dataclass(frozen=True)
class Spooled:
    path: str
    size: int
    sha256: str | None
    """None unless asked for (`spool(digest=True)`): the extract handler hashes the file."""


async def spool(
    chunks: AsyncIterator[bytes], max_bytes: int, directory: str | None, *, digest: bool = True
) -> Spooled:
    """Write `chunks` to a temporary file; the caller deletes `path`. `digest`: also take its
    sha256 (what an idempotency key's same-request check compares).

    Raises:
        FileTooLarge, NotAPdf, EmptyFile: checked while the bytes arrive, before storing them.
    """
    fd, path = tempfile.mkstemp(prefix="upload-", suffix=".pdf", dir=directory)
    hasher = hashlib.sha256() if digest else None
    size = 0
    head = b""
    pending: list[bytes] = []
    buffered = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(f"the file is larger than the limit of {max_bytes} bytes")
                if len(head) < MAGIC_WINDOW:
                    head += chunk[: MAGIC_WINDOW - len(head)]
                    if len(head) >= MAGIC_WINDOW and PDF_MAGIC not in head:
                        raise NotAPdf("the file is not a PDF (no %PDF- header)")
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BYTES:
                    await asyncio.to_thread(_write, fh, pending, hasher)
                    pending, buffered = [], 0
            if pending:
                await asyncio.to_thread(_write, fh, pending, hasher)
        if size == 0:
            raise EmptyFile("the file is empty")
        if PDF_MAGIC not in head:
            raise NotAPdf("the file is not a PDF (no %PDF- header)")
    except BaseException:
        os.unlink(path)
        raise
    return Spooled(path=path, size=size, sha256=hasher.hexdigest() if hasher else None)


def _write(fh: BinaryIO, chunks: list[bytes], hasher: hashlib._Hash | None) -> None:
    for chunk in chunks:
        if hasher is not None:
            hasher.update(chunk)
        fh.write(chunk)

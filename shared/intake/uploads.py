"""Receiving a PDF upload: stream it to a spool file, checking magic bytes and size on the way."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shared.errors import EmptyFile, FileTooLarge, NotAPdf

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024
"""The PDF header may follow a little junk; readers accept it within the first 1 KiB."""


@dataclass(frozen=True)
class Spooled:
    path: str
    size: int
    sha256: str


async def spool(chunks: AsyncIterator[bytes], max_bytes: int, directory: str | None) -> Spooled:
    """Write `chunks` to a temporary file; the caller deletes `path`.

    Raises:
        FileTooLarge, NotAPdf, EmptyFile: checked while the bytes arrive, before storing them.
    """
    fd, path = tempfile.mkstemp(prefix="upload-", suffix=".pdf", dir=directory)
    digest = hashlib.sha256()
    size = 0
    head = b""
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
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise EmptyFile("the file is empty")
        if PDF_MAGIC not in head:
            raise NotAPdf("the file is not a PDF (no %PDF- header)")
    except BaseException:
        os.unlink(path)
        raise
    return Spooled(path=path, size=size, sha256=digest.hexdigest())

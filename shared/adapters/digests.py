"""(size, sha256) of a file: the one digest the worker, the cache and the handlers use."""

from __future__ import annotations

import hashlib


def file_digest(path: str) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in 1 MiB chunks; blocking: run it in a thread."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()

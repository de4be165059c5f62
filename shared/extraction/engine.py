"""Turn one PDF file into an ExtractionResult plus artifact files; runs inside a worker process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymupdf

from shared.errors import ErrorCode, PermanentError
from shared.models import ExtractionResult, ExtractOptions, PageText

EXTRACTOR_VERSION = "1"

ProgressFn = Callable[[int, int], None]
"""Called as progress(pages_done, pages_total) while pages are processed."""


@dataclass(frozen=True)
class ExtractLimits:
    max_pages: int = 5000
    max_page_pixels: int = 50_000_000


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    path: str
    content_type: str


@dataclass
class EngineOutput:
    result: ExtractionResult
    artifacts: list[ArtifactFile] = field(default_factory=list)


def parse_pages(spec: str | None, page_count: int) -> list[int]:
    """0-based page indexes for a 1-based spec like "1-3,7"; out-of-range pages are dropped."""
    if spec is None:
        return list(range(page_count))
    wanted: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        start = int(first)
        end = int(last) if last else (page_count if "-" in part else start)
        if start < 1 or end < start:
            raise PermanentError(f"invalid page range {part!r}", ErrorCode.INVALID_OPTIONS)
        wanted.update(range(start - 1, min(end, page_count)))
    if not wanted:
        raise PermanentError(
            f"pages {spec!r} selects nothing in a {page_count}-page document",
            ErrorCode.INVALID_OPTIONS,
        )
    return sorted(wanted)


def _open(path: str) -> pymupdf.Document:
    data_head = Path(path).read_bytes()[:1024]
    if not data_head:
        raise PermanentError("the file is empty", ErrorCode.EMPTY_FILE)
    if b"%PDF-" not in data_head:
        raise PermanentError("the file is not a PDF", ErrorCode.NOT_A_PDF)
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:
        raise PermanentError(
            "the PDF is damaged and cannot be opened", ErrorCode.PDF_DAMAGED
        ) from exc
    if doc.needs_pass:
        doc.close()
        raise PermanentError("the PDF is encrypted with a password", ErrorCode.PDF_ENCRYPTED)
    if doc.page_count == 0:
        doc.close()
        raise PermanentError("the PDF has no pages", ErrorCode.PDF_DAMAGED)
    return doc


def _metadata(doc: pymupdf.Document) -> dict[str, Any]:
    meta = doc.metadata or {}
    return {
        "title": meta.get("title") or None,
        "author": meta.get("author") or None,
        "subject": meta.get("subject") or None,
        "keywords": meta.get("keywords") or None,
        "creator": meta.get("creator") or None,
        "producer": meta.get("producer") or None,
        "creation_date": meta.get("creationDate") or None,
        "modification_date": meta.get("modDate") or None,
        "page_count": doc.page_count,
        "outline": [
            {"level": level, "title": title, "page": page}
            for level, title, page in doc.get_toc(simple=True)
        ],
    }


def extract_document(
    path: str,
    options: ExtractOptions,
    limits: ExtractLimits,
    out_dir: str,
    progress: ProgressFn,
) -> EngineOutput:
    """Extract what `options` asks for from the PDF at `path`.

    Raises:
        PermanentError: with a stable code for every input the engine refuses.
    """
    doc = _open(path)
    try:
        if doc.page_count > limits.max_pages:
            raise PermanentError(
                f"the PDF has {doc.page_count} pages, more than the limit of {limits.max_pages}",
                ErrorCode.TOO_MANY_PAGES,
            )
        indexes = parse_pages(options.pages, doc.page_count)
        result = ExtractionResult(page_count=doc.page_count)
        if "text" in options.outputs:
            for done, index in enumerate(indexes, start=1):
                text = doc.load_page(index).get_text()
                result.pages.append(PageText(number=index + 1, text=text))
                progress(done, len(indexes))
        if "metadata" in options.outputs:
            result.metadata = _metadata(doc)
        return EngineOutput(result=result)
    finally:
        doc.close()

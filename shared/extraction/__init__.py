"""The extraction engine: pure, synchronous functions over a PDF file, run in worker processes."""

from shared.extraction.base import (
    EXTRACTOR_VERSION,
    ArtifactFile,
    EngineOutput,
    ExtractLimits,
    ProgressFn,
)
from shared.extraction.engine import extract_document, page_count_above, parse_pages
from shared.extraction.hostile import HeldDocument

__all__ = [
    "EXTRACTOR_VERSION",
    "ArtifactFile",
    "EngineOutput",
    "ExtractLimits",
    "HeldDocument",
    "ProgressFn",
    "extract_document",
    "page_count_above",
    "parse_pages",
]

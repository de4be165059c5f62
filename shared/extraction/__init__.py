"""The extraction engine: pure, synchronous functions over a PDF file, run in worker processes."""

from shared.extraction.engine import (
    EXTRACTOR_VERSION,
    ArtifactFile,
    EngineOutput,
    ExtractLimits,
    ProgressFn,
    extract_document,
)

__all__ = [
    "EXTRACTOR_VERSION",
    "ArtifactFile",
    "EngineOutput",
    "ExtractLimits",
    "ProgressFn",
    "extract_document",
]

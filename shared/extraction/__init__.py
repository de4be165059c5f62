"""The extraction engine: pure, synchronous functions over a PDF file, run in worker processes."""

import sys

# PyMuPDF 2 imports its add-ons when it is imported itself: pymupdf_layout (an ONNX model,
# loaded at once, and numpy) and pymupdf4llm where that is installed (the tests' yardstick):
# ~135 MiB in every process that loads the engine and seconds of CPU at each start, for
# `Page.get_layout` and `to_markdown`, which the engine never calls (its tables use
# `use_layout=False`). Blocked here, in the package every module of the engine is imported
# through, before any of them imports PyMuPDF; a process that imported them first keeps them.
for _addon in ("pymupdf.layout", "pymupdf4llm"):
    sys.modules.setdefault(_addon, None)  # type: ignore[arg-type]

import pymupdf  # noqa: E402

from shared.extraction.base import (  # noqa: E402
    EXTRACTOR_VERSION,
    ArtifactFile,
    EngineOutput,
    ExtractLimits,
    ProgressFn,
)
from shared.extraction.engine import extract_document, page_count_above, parse_pages  # noqa: E402
from shared.extraction.hostile import HeldDocument  # noqa: E402

# Characters' boxes as MuPDF measures them, without PyMuPDF's ascender/descender corrections:
# those cost ~20 % of a text extraction's CPU (`get_text()` of the corpus's manuals, same run:
# 0.61 vs 0.50 s), and the text is the same. It was the state every test and benchmark ran in
# all along, set as a side effect by the tests' pymupdf4llm, which the engine no longer loads
# (above); production, without pymupdf4llm, ran with them on. Now one state everywhere.
pymupdf.TOOLS.unset_quad_corrections(True)

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

"""Value types shared by the extraction modules: limits, artifacts, the engine's output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shared.models import ExtractionResult

EXTRACTOR_VERSION = "7"
"""Part of the result-cache key: bump it whenever the same input would extract differently."""

ProgressFn = Callable[[int, int], None]
"""Called as progress(pages_done, pages_total) while pages are processed."""


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on the work one document may cause; all checked before the per-page work."""

    max_pages: int = 5000
    """Documents with more pages fail with TOO_MANY_PAGES (whatever `pages` selects)."""
    max_page_pixels: int = 50_000_000
    """Pixels of one rendered page (page images at `image_dpi`, OCR); over it: PAGE_TOO_LARGE."""
    max_image_pixels: int = 100_000_000
    """Decoded pixels of one embedded image; a page that would decode more is not rendered."""
    max_file_bytes: int | None = None
    """Larger files fail with FILE_TOO_LARGE (the ingress normally refuses them first)."""
    max_inflated_bytes: int | None = 1024 * 1024 * 1024
    """Bytes all of a file's Flate streams may inflate to; more fails with DECOMPRESSION_LIMIT."""
    max_images: int = 5000
    """Embedded images written to images.zip; the rest are skipped with a warning."""
    max_links: int = 10_000
    """External links listed in the metadata; the rest are counted only."""
    preview_long_edge: int = 512
    """Long edge in pixels of the page previews in page_images.zip."""
    ocr_dpi: int = 300
    """Resolution at which pages are rendered for Tesseract."""
    llm_dpi: int = 300
    """Resolution at which pages are rendered for the vision model (output `llm`)."""
    tessdata: str | None = None
    """Tesseract language data folder; None: $TESSDATA_PREFIX or the Debian/Ubuntu locations."""
    range_part: bool = False
    """A page range of a split document (shared/jobs/fanout.py): what needs the whole document is
    left for the merge. The metadata has only its per-page parts (but in the first range,
    which builds the rest once), the Markdown comes as `MarkdownBuilder.state()` in
    `markdown-state.json` (an artifact), to be rendered with the other ranges' pages."""


@dataclass(frozen=True)
class ArtifactFile:
    """A file the engine wrote into `out_dir`, to be stored next to the result."""

    name: str
    path: str
    content_type: str


@dataclass
class EngineOutput:
    result: ExtractionResult
    artifacts: list[ArtifactFile] = field(default_factory=list)
    pages_processed: int = 0
    """Selected pages that were processed (whatever the outputs; `result.pages` only fills
    when `text` is asked for)."""

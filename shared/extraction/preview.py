"""One page of a PDF as a PNG of a chosen width: the console's page preview (in a worker)."""

from __future__ import annotations

import os

import pymupdf

from shared.errors import ErrorCode, PermanentError
from shared.extraction.base import ExtractLimits
from shared.extraction.hostile import check_render, open_pdf

PREVIEW_FILE = "preview.png"


def render_page(
    pdf_path: str, number: int, width: int, limits: ExtractLimits, out_dir: str
) -> tuple[str, int]:
    """Render page `number` (1-based) `width` pixels wide into `out_dir`.

    Returns:
        The PNG's path and the document's page count.

    Raises:
        PermanentError: the document cannot be opened (the codes of `open_pdf`), the page does
            not exist (NOT_FOUND), or it would render to too many pixels (PAGE_TOO_LARGE).
    """
    doc = open_pdf(pdf_path, limits)
    try:
        count = doc.page_count
        if not 1 <= number <= count:
            raise PermanentError(
                f"page {number} is out of range: the document has {count} pages",
                ErrorCode.NOT_FOUND,
            )
        page = doc.load_page(number - 1)
        dpi = 72.0 * width / max(page.rect.width, 1.0)
        check_render(page, dpi, limits, "a preview")
        zoom = dpi / 72.0
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
        path = os.path.join(out_dir, PREVIEW_FILE)
        pix.save(path, output="png")
        return path, count
    finally:
        doc.close()

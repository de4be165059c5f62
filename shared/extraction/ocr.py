"""OCR with the Tesseract built into MuPDF: finding the language data, and which pages need it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pymupdf

from shared.adapters.tessdata import TESSDATA_GLOBS as TESSDATA_GLOBS
from shared.adapters.tessdata import find_tessdata as find_tessdata
from shared.adapters.tessdata import ocr_languages as ocr_languages
from shared.errors import ErrorCode, PermanentError
from shared.extraction.base import ExtractLimits
from shared.extraction.hostile import check_render, is_out_of_memory, short_error

MIN_TEXT_CHARS = 50
"""Fewer non-blank characters than this and the text layer is not usable on an image page."""
MIN_IMAGE_COVER = 0.3
"""Fraction of the page an image must cover for a page without text to count as a scan."""
MIN_OCR_DPI = 72


def require_tessdata(language: str, explicit: str | None = None) -> str:
    """The language data folder, checked to hold every language of `language` ("eng+deu").

    Raises:
        PermanentError: OCR_UNAVAILABLE when Tesseract's data or a language is missing.
    """
    folder = find_tessdata(explicit)
    if folder is None:
        raise PermanentError(
            "OCR is not available: Tesseract language data is not installed on this worker "
            "(Debian: apt-get install tesseract-ocr tesseract-ocr-eng); use ocr: never",
            ErrorCode.OCR_UNAVAILABLE,
        )
    missing = [
        lang for lang in language.split("+") if not Path(folder, f"{lang}.traineddata").is_file()
    ]
    if missing:
        raise PermanentError(
            f"OCR is not available for language {'+'.join(missing)}: its Tesseract data is "
            "not installed on this worker",
            ErrorCode.OCR_UNAVAILABLE,
        )
    return folder


_UNREADABLE = re.compile("[\ufffd\ue000-\uf8ff]")
"""U+FFFD and private-use characters: what fonts without a Unicode map extract as."""


def text_is_usable(text: str) -> bool:
    """Enough readable characters to trust the text layer (not empty, not U+FFFD garbage)."""
    if _UNREADABLE.search(text) is None:
        # Nothing unreadable (nearly every page): only the count matters, and a page's first
        # few hundred characters usually settle it; no copy of the whole text without its
        # whitespace (a tenth of the engine's own Python time per page).
        head = "".join(text[: MIN_TEXT_CHARS * 8].split())
        if len(head) >= MIN_TEXT_CHARS:
            return True
    visible = "".join(text.split())
    count = len(visible)
    if count < MIN_TEXT_CHARS:
        return False
    return len(_UNREADABLE.findall(visible)) <= count * 0.1


def needs_ocr(page: pymupdf.Page, text: str) -> bool:
    """For `ocr: auto`: the page has no usable text layer and shows an image (a scan, a
    photograph of text). Blank pages and pages with only vector drawings are not OCRed."""
    if text_is_usable(text):
        return False
    area = float(abs(page.rect))
    if area <= 0:
        return False
    covered = 0.0
    for info in page.get_image_info():
        bbox = pymupdf.Rect(info["bbox"]) & page.rect
        if not bbox.is_empty:
            covered += float(abs(bbox))
    return covered >= MIN_IMAGE_COVER * area


def ocr_dpi_for(page: pymupdf.Page, limits: ExtractLimits) -> int:
    """`limits.ocr_dpi`, lowered for big pages so the rendering stays under the pixel limit.

    Raises:
        PermanentError: PAGE_TOO_LARGE when even MIN_OCR_DPI would be too many pixels, or an
            image on the page is over the decoded image limit.
    """
    rect = page.rect
    area_in2 = abs(rect.width * rect.height) / (72.0 * 72.0)
    dpi = limits.ocr_dpi
    if area_in2 > 0:
        fit = math.floor(math.sqrt(limits.max_page_pixels / area_in2))
        dpi = max(min(dpi, fit), MIN_OCR_DPI)
    check_render(page, dpi, limits, "OCR")
    return dpi


def ocr_textpage(
    page: pymupdf.Page, flags: int, language: str, tessdata: str, limits: ExtractLimits
) -> pymupdf.TextPage:
    """A TextPage made by OCR of the whole page rendered at an allowed resolution."""
    dpi = ocr_dpi_for(page, limits)
    try:
        textpage: pymupdf.TextPage = page.get_textpage_ocr(
            flags=flags, language=language, dpi=dpi, full=True, tessdata=tessdata
        )
    except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        if is_out_of_memory(exc):
            raise MemoryError(str(exc)) from exc
        # the page rendered (limits were checked): what failed is Tesseract or its data
        raise PermanentError(
            f"OCR failed on page {page.number + 1}: {short_error(exc, tessdata)}",
            ErrorCode.OCR_UNAVAILABLE,
        ) from exc
    return textpage

"""OCR with Tesseract: auto/always/never, languages, and a clear error when it is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pymupdf
import pytest

from shared.errors import ErrorCode, PermanentError
from shared.extraction import EngineOutput, ExtractLimits, extract_document
from shared.extraction.ocr import find_tessdata, needs_ocr, ocr_dpi_for, text_is_usable
from shared.models import ExtractOptions
from tests.unit import pdfgen

SCAN_LINES = ["Invoice number 4711", "Grüße aus Köln"]
NO_TESSDATA = "/nonexistent/tessdata"

needs_tesseract = pytest.mark.skipif(
    find_tessdata() is None, reason="Tesseract language data is not installed (make setup)"
)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scan")
    return pdfgen.scanned_pdf(d / "scan.pdf", SCAN_LINES, with_text_page=True)


@pytest.fixture(scope="module")
def text_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pdfgen.text_pdf(tmp_path_factory.mktemp("text") / "text.pdf", pages=2)


def run(
    path: Path, out_dir: Path, limits: ExtractLimits | None = None, **options: object
) -> EngineOutput:
    return extract_document(
        str(path),
        ExtractOptions.model_validate({"outputs": ["text", "markdown"], **options}),
        limits or ExtractLimits(),
        str(out_dir),
        lambda done, total: None,
    )


def test_the_scan_has_no_text_layer(scan: Path) -> None:
    with pymupdf.open(scan) as doc:
        assert doc[1].get_text().strip() == ""
        assert needs_ocr(doc[1], "") is True
        assert needs_ocr(doc[0], doc[0].get_text()) is False


@needs_tesseract
def test_auto_ocrs_only_the_page_without_text(scan: Path, tmp_path: Path) -> None:
    out = run(scan, tmp_path, ocr="auto", ocr_language="eng+deu")
    first, second = out.result.pages
    assert first.ocr is False
    assert "normal page with a text layer" in first.text
    assert second.ocr is True
    assert "Invoice number 4711" in second.text
    assert "Grüße aus Köln" in second.text
    md = out.result.markdown or ""
    # OCR text is prose, not code: its single font says nothing about monospace
    assert "Invoice number 4711" in md
    assert "```" not in md


@needs_tesseract
def test_always_ocrs_every_page(scan: Path, tmp_path: Path) -> None:
    out = run(scan, tmp_path, ocr="always", ocr_language="eng+deu", outputs=["text"])
    assert [p.ocr for p in out.result.pages] == [True, True]
    assert "normal page" in out.result.pages[0].text


def test_never_leaves_the_scan_empty(scan: Path, tmp_path: Path) -> None:
    out = run(scan, tmp_path, ocr="never", outputs=["text"])
    assert [p.ocr for p in out.result.pages] == [False, False]
    assert out.result.pages[1].text.strip() == ""


def test_missing_tessdata_fails_clearly(scan: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        run(scan, tmp_path, ExtractLimits(tessdata=NO_TESSDATA), ocr="always")
    assert info.value.code is ErrorCode.OCR_UNAVAILABLE
    assert NO_TESSDATA not in info.value.message


def test_auto_without_tessdata_keeps_the_text_layer(scan: Path, tmp_path: Path) -> None:
    out = run(scan, tmp_path, ExtractLimits(tessdata=NO_TESSDATA), ocr="auto")
    first, second = out.result.pages
    assert "normal page with a text layer" in first.text
    assert (first.ocr, first.ocr_unavailable) == (False, False)
    assert (second.ocr, second.ocr_unavailable) == (False, True)
    warnings = [w for w in out.result.warnings if "not OCRed" in w]
    assert len(warnings) == 1
    assert warnings[0].startswith("page 2: not OCRed: OCR is not available")
    assert NO_TESSDATA not in warnings[0]


@needs_tesseract
def test_auto_without_the_language_keeps_the_text_layer(scan: Path, tmp_path: Path) -> None:
    out = run(scan, tmp_path, ocr="auto", ocr_language="eng+klingon")
    assert [p.ocr_unavailable for p in out.result.pages] == [False, True]
    assert any(w.startswith("page 2: not OCRed") and "klingon" in w for w in out.result.warnings)


def test_missing_tessdata_is_fine_when_no_page_needs_ocr(text_only: Path, tmp_path: Path) -> None:
    out = run(text_only, tmp_path, ExtractLimits(tessdata=NO_TESSDATA), ocr="auto")
    assert [p.ocr for p in out.result.pages] == [False, False]


def test_missing_tessdata_is_fine_without_text_outputs(text_only: Path, tmp_path: Path) -> None:
    out = run(
        text_only,
        tmp_path,
        ExtractLimits(tessdata=NO_TESSDATA),
        ocr="always",
        outputs=["metadata"],
    )
    assert out.result.metadata is not None


def test_broken_language_data_fails_clearly(scan: Path, tmp_path: Path) -> None:
    tessdata = tmp_path / "tessdata"
    tessdata.mkdir()
    (tessdata / "eng.traineddata").write_bytes(b"not a model")
    with pytest.raises(PermanentError) as info:
        run(scan, tmp_path, ExtractLimits(tessdata=str(tessdata)), ocr="always")
    assert info.value.code is ErrorCode.OCR_UNAVAILABLE
    assert str(tessdata) not in info.value.message


@needs_tesseract
def test_missing_language_fails_clearly(scan: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        run(scan, tmp_path, ocr="always", ocr_language="eng+klingon")
    assert info.value.code is ErrorCode.OCR_UNAVAILABLE
    assert "klingon" in info.value.message


def test_ocr_resolution_shrinks_for_big_pages() -> None:
    doc = pymupdf.open()
    try:
        for side in (595, 5000, 14400):
            doc.new_page(width=side, height=side)
        limits = ExtractLimits(ocr_dpi=300, max_page_pixels=50_000_000)
        assert ocr_dpi_for(doc[0], limits) == 300
        dpi = ocr_dpi_for(doc[1], limits)
        assert 72 <= dpi < 300
        assert (5000 * dpi / 72) ** 2 <= 50_000_000
        with pytest.raises(PermanentError) as info:
            ocr_dpi_for(doc[2], limits)
        assert info.value.code is ErrorCode.PAGE_TOO_LARGE
    finally:
        doc.close()


@pytest.mark.parametrize(
    ("text", "usable"),
    [
        ("", False),
        ("   \n  ", False),
        ("12", False),
        ("A real sentence with more than fifty characters in total, surely.", True),
        ("\ufffd" * 80, False),
    ],
)
def test_text_is_usable(text: str, usable: bool) -> None:
    assert text_is_usable(text) is usable


def test_find_tessdata_explicit_folder(tmp_path: Path) -> None:
    assert find_tessdata(str(tmp_path)) == str(tmp_path)
    assert find_tessdata(NO_TESSDATA) is None


@needs_tesseract
def test_auto_ocrs_the_scan_when_blocks_are_asked_for_too(scan: Path, tmp_path: Path) -> None:
    # the blocks take the page's text from the figure search: the scan check must run there too
    out = run(scan, tmp_path, ocr="auto", ocr_language="eng+deu", outputs=["text", "blocks"])
    assert [p.ocr for p in out.result.pages] == [False, True]
    assert "Invoice number 4711" in out.result.pages[1].text
    doc = json.loads((tmp_path / "document.json").read_text(encoding="utf-8"))
    assert any("Invoice number 4711" in b["text"] for b in doc["blocks"] if b["page"] == 2)

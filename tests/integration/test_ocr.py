"""`ocr: auto` on the real stack: a worker without OCR completes with the text layer and a
warning; with OCR the image-only page is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.extraction.ocr import find_tessdata
from tests.conftest import running_stack
from tests.helpers import upload, wait_done
from tests.unit import pdfgen

pytestmark = pytest.mark.integration

LINES = ["Invoice number 4711", "Delivery note 0815"]
OPTIONS = '{"outputs": ["text"], "ocr": "auto"}'


async def _run(make_settings: Any, tmp_path: Path, tessdata: str | None) -> tuple[Any, Any]:
    pdf = pdfgen.scanned_pdf(tmp_path / "scan.pdf", LINES, with_text_page=True).read_bytes()
    async with running_stack(make_settings(tessdata_dir=tessdata)) as stack:
        ocr = (await (await stack.client.get("/readyz")).json())["ocr"]
        assert ocr["available"] is (tessdata is None)
        assert ("eng" in ocr["languages"]) is (tessdata is None)
        accepted = await upload(stack, pdf, options=OPTIONS)
        job = await wait_done(stack, accepted["job_id"])
        resp = await stack.client.get(f"/v1/jobs/{accepted['job_id']}/result")
        return job, await resp.json()


async def test_auto_without_ocr_completes_with_the_text_layer(
    make_settings: Any, tmp_path: Path
) -> None:
    empty = tmp_path / "no-tessdata"
    empty.mkdir()
    job, result = await _run(make_settings, tmp_path, str(empty))
    assert job["status"] == "completed", job
    first, second = result["pages"]
    assert "normal page with a text layer" in first["text"]
    assert first["ocr_unavailable"] is False
    assert (second["ocr"], second["ocr_unavailable"]) == (False, True)
    assert any(w.startswith("page 2: not OCRed: OCR is not available") for w in result["warnings"])


@pytest.mark.skipif(find_tessdata() is None, reason="Tesseract language data is not installed")
async def test_auto_with_ocr_reads_the_image_page(make_settings: Any, tmp_path: Path) -> None:
    job, result = await _run(make_settings, tmp_path, None)
    assert job["status"] == "completed", job
    second = result["pages"][1]
    assert (second["ocr"], second["ocr_unavailable"]) == (True, False)
    assert "Invoice number 4711" in second["text"]
    assert not any("not OCRed" in w for w in result["warnings"])

"""The Secretary's form fields → options, and the seed's payload shapes, without a broker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.doors.seed_payloads import (
    client_job_id,
    extraction_method,
    options_from_form,
    seed_id,
    terminal_payload,
    url_filename,
    wait_seconds,
)
from shared.errors import ErrorCode, PermanentError
from shared.models import (
    Artifact,
    ExtractionResult,
    Job,
    JobError,
    JobResultSummary,
    JobStatus,
    PageText,
    utcnow,
)


@pytest.mark.parametrize(
    ("method", "outputs", "ocr"),
    [
        (None, {"text", "metadata"}, "never"),
        ("native", {"text", "metadata"}, "never"),
        ("tesseract_ocr", {"text", "metadata"}, "always"),
        ("ocr", {"text", "metadata"}, "always"),
        ("both", {"text", "metadata"}, "auto"),
        ("preview", {"metadata", "page_images"}, "never"),
        ("preview_and_native", {"text", "metadata", "page_images"}, "never"),
    ],
)
def test_extraction_method_maps_and_maps_back(
    method: str | None, outputs: set[str], ocr: str
) -> None:
    opts = options_from_form({"extraction_method": method} if method else {})
    assert set(opts.outputs) == outputs
    assert opts.ocr == ocr
    back = extraction_method(Job(job_id="a" * 32, door="seed", options=opts))
    assert back == {None: "native", "ocr": "tesseract_ocr"}.get(method, method)


def test_every_seed_field_takes_effect() -> None:
    opts = options_from_form({"includeImages": "true", "page_start": "2", "page_end": "4"})
    assert "images" in opts.outputs
    assert opts.pages == "2-4"
    assert not opts.force_refresh
    assert options_from_form({"page_start": "3"}).pages == "3-"
    assert options_from_form({"page_end": "2"}).pages == "1-2"
    assert options_from_form({"useCache": "false"}).force_refresh
    assert options_from_form({"force_refresh": "True"}).force_refresh
    assert not options_from_form({"useCache": "1", "force_refresh": "0"}).force_refresh


@pytest.mark.parametrize(
    "fields",
    [
        {"extraction_method": "gpt"},
        {"page_start": "0"},
        {"page_end": "two"},
        {"page_start": "5", "page_end": "4"},
        {"includeImages": "maybe"},
        {"template": "Besprechung", "context": "[1]"},
        {"template": "Besprechung", "context": "{no json"},
        {"template": "../etc/passwd"},
    ],
)
def test_bad_fields_are_invalid_options(fields: dict[str, str]) -> None:
    with pytest.raises(PermanentError) as err:
        options_from_form(fields)
    assert err.value.code is ErrorCode.INVALID_OPTIONS


def test_client_job_id_is_checked() -> None:
    assert client_job_id("") is None
    assert client_job_id("a/../b c") == "a/../b c"
    for bad in ("x" * 257, "line\nbreak", "nul\0"):
        with pytest.raises(PermanentError):
            client_job_id(bad)


def _job(**update: object) -> Job:
    created = utcnow()
    job = Job(
        job_id="b" * 32,
        door="seed",
        client_ref="client-7",
        filename="f.pdf",
        source_size=1234,
        created_at=created,
        finished_at=created + timedelta(milliseconds=1500),
    )
    return job.model_copy(update=update)


def test_completed_payload_has_text_pages_and_archive_link() -> None:
    job = _job(
        status=JobStatus.COMPLETED,
        result=JobResultSummary(
            page_count=2,
            pages_extracted=2,
            artifacts=(Artifact(name="images.zip", size=1, sha256="0"),),
        ),
    )
    result = ExtractionResult(
        page_count=2,
        pages=[PageText(number=1, text="eins"), PageText(number=2, text="zwei")],
        metadata={"title": "T"},
    )
    body = terminal_payload(job, result, "http://h")
    assert body["status"] == "completed"
    assert body["jobId"] == "client-7"
    assert body["process"]["duration_ms"] == 1500
    data = body["data"]
    assert data["extracted_text"] == "\n--- Seite 1 ---\neins\n--- Seite 2 ---\nzwei"
    assert data["metadata"]["text_contents"] == [
        {"page": 1, "content": "eins"},
        {"page": 2, "content": "zwei"},
    ]
    assert data["metadata"]["title"] == "T"
    assert data["metadata"]["file_size"] == 1234
    assert data["images_archive_url"] == f"http://h/api/jobs/{job.job_id}/download-archive"


def test_long_text_is_cut_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.doors.seed_payloads.MAX_INLINE_CHARS", 10)
    job = _job(status=JobStatus.COMPLETED)
    pages = [PageText(number=n, text="x" * 6) for n in (1, 2, 3)]
    data = terminal_payload(job, ExtractionResult(page_count=3, pages=pages), "http://h")["data"]
    assert [c["page"] for c in data["metadata"]["text_contents"]] == [1]
    assert data["truncated"] is True
    assert data["result_url"] == f"http://h/v1/jobs/{job.job_id}/result"


def test_error_payload_and_ids() -> None:
    job = _job(status=JobStatus.FAILED, error=JobError(code="PDF_DAMAGED", message="broken"))
    body = terminal_payload(job, None, "http://h")
    assert body == {
        "status": "error",
        "worker": "secretary",
        "jobId": "client-7",
        "process": {
            "id": job.job_id,
            "main_processor": "pdf",
            "started": job.created_at.isoformat(),
        },
        "data": None,
        "error": {"code": "PDF_DAMAGED", "message": "broken"},
    }
    # client_ref is the seed id only for seed jobs; a /v1 job's client_ref is just echoed.
    assert seed_id(job.model_copy(update={"door": "http"})) == job.job_id


def test_wait_ms_is_capped_and_url_names_the_file() -> None:
    assert wait_seconds(None, 60) == 0
    assert wait_seconds("1500", 60) == 1.5
    assert wait_seconds("600000", 120) == 60  # the seed cap
    assert wait_seconds("600000", 10) == 10  # PDFRELAY_MAX_WAIT_S lower still
    with pytest.raises(PermanentError):
        wait_seconds("-1", 60)
    assert url_filename("https://h/a/B%C3%A4r.pdf?x=1") == "Bär.pdf"
    assert url_filename("https://h/") is None

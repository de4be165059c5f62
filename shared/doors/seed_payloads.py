"""The Secretary's (seed's) shapes: its form fields in; acknowledgement, webhooks, job out."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, PermanentError
from shared.jobs.records import job_result_key, public_view
from shared.models import (
    LLM_OUTPUT,
    ExtractionResult,
    ExtractOptions,
    Job,
    JobStatus,
    Output,
    PageText,
    WebhookState,
)
from shared.runtime.context import Context

log = logging.getLogger(__name__)

WORKER = "secretary"
MAIN_PROCESSOR = "pdf"
ARCHIVES = ("images.zip", "page_images.zip")
"""Artifacts `download-archive` serves, first present wins (names from shared/extraction/images:
not imported, as that would load PyMuPDF into the ingress)."""
MAX_INLINE_CHARS = 1_000_000
"""Page text one webhook body carries at most (it travels twice: `extracted_text` and
`text_contents`; a few MB as UTF-8). Beyond it the payload is cut at a page and says so; the
whole result stays at /v1/jobs/{id}/result. Keeps broker messages (RabbitMQ 4 refuses more
than 16 MiB by default) and the sealed webhook state stored per attempt bounded."""


MAX_JOB_ID_CHARS = 256
MAX_WAIT_S = 60.0
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_METHOD_ALIASES = {"ocr": "tesseract_ocr"}
"""Older Secretary releases called `tesseract_ocr` just `ocr`."""


def _invalid(message: str) -> PermanentError:
    return PermanentError(message, ErrorCode.INVALID_OPTIONS)


def _flag(fields: Mapping[str, str], name: str, default: bool) -> bool:
    raw = fields.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise _invalid(f"{name} must be true or false")


def _page(fields: Mapping[str, str], name: str) -> int | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        page = int(raw)
    except ValueError:
        raise _invalid(f"{name} must be a page number (1-based)") from None
    if page < 1:
        raise _invalid(f"{name} must be at least 1")
    return page


def _context(raw: str) -> dict[str, object] | None:
    """The seed's `context`: a JSON object (as text) for the template's placeholders."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise _invalid("context must be a JSON object") from None
    if not isinstance(value, dict):
        raise _invalid("context must be a JSON object")
    return value


def options_from_form(fields: Mapping[str, str]) -> ExtractOptions:
    """The job options the seed's form fields ask for; every field takes effect.

    Raises:
        PermanentError: INVALID_OPTIONS for a value the seed would not have accepted either.
    """
    template = fields.get("template", "").strip() or None
    context = _context(fields.get("context", "")) if template is not None else None
    method = fields.get("extraction_method", "").strip() or "native"
    start, end = _page(fields, "page_start"), _page(fields, "page_end")
    if start is not None and end is not None and end < start:
        raise _invalid("page_end must not be before page_start")
    pages = None if start is None and end is None else f"{start or 1}-{end or ''}"
    outputs: tuple[Output, ...] = ("metadata",)
    if _flag(fields, "includeImages", False):
        outputs = ("metadata", "images")
    # `useCache=false` and `force_refresh=true` both mean: extract afresh, reuse no result.
    force = _flag(fields, "force_refresh", False) or not _flag(fields, "useCache", True)
    try:
        return ExtractOptions(
            method=_METHOD_ALIASES.get(method, method),
            outputs=outputs,
            pages=pages,
            force_refresh=force,
            template=template,
            context=context,
        )
    except ValidationError as exc:
        raise _invalid("; ".join(e["msg"] for e in exc.errors())) from exc


def wait_seconds(raw: str | None, max_wait_s: float) -> float:
    """`wait_ms` in seconds, capped at `MAX_WAIT_S` and at `PDFRELAY_MAX_WAIT_S`."""
    if not raw or not raw.strip():
        return 0.0
    try:
        wait_ms = int(raw)
    except ValueError:
        raise PermanentError("wait_ms must be milliseconds", ErrorCode.INVALID_REQUEST) from None
    if wait_ms < 0:
        raise PermanentError("wait_ms must not be negative", ErrorCode.INVALID_REQUEST)
    return min(wait_ms / 1000, MAX_WAIT_S, max_wait_s)


def url_filename(url: str) -> str | None:
    """The last path segment of a source URL, as the Secretary named URL documents."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    return name[:MAX_JOB_ID_CHARS] if name and name.isprintable() else None


def client_job_id(raw: str | None) -> str | None:
    """The client's `jobId`, checked: it only ever reaches storage keys as a hash."""
    if not raw:
        return None
    if len(raw) > MAX_JOB_ID_CHARS or not raw.isprintable():
        raise PermanentError(
            f"jobId must be printable and at most {MAX_JOB_ID_CHARS} characters",
            ErrorCode.INVALID_REQUEST,
        )
    return raw


def seed_id(job: Job) -> str:
    """The id a seed client knows the job by: its own `jobId` when it gave one."""
    return job.client_ref if job.door == "seed" and job.client_ref else job.job_id


def archive_name(job: Job) -> str | None:
    """The ZIP artifact `download-archive` serves, if the job has one."""
    names = {a.name for a in job.result.artifacts} if job.result else set()
    return next((n for n in ARCHIVES if n in names), None)


def extraction_method(job: Job) -> str:
    """The seed `extraction_method` the job's options correspond to."""
    outputs, ocr = set(job.options.outputs), job.options.ocr
    if LLM_OUTPUT in outputs:
        if "text" not in outputs:
            return "llm"
        return "llm_and_ocr" if ocr == "always" else "llm_and_native"
    if ocr == "always":
        return "tesseract_ocr"
    if ocr == "auto":
        return "both"
    if "page_images" in outputs:
        return "preview_and_native" if "text" in outputs else "preview"
    return "native"


def page_content(method: str, page: PageText) -> str:
    """A page's text as the Secretary gave it: the combined LLM methods in its two-part shape
    (on /v1 they are the separate fields `text` and `llm`)."""
    if method == "llm_and_native":
        return f"=== Native Text ===\n{page.text}\n\n=== LLM Markdown ===\n{page.llm or ''}"
    if method == "llm_and_ocr":
        return f"=== LLM Markdown ===\n{page.llm or ''}\n\n=== Tesseract OCR ===\n{page.text}"
    return page.text


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def process_info(job: Job, *, finished: bool = False) -> dict[str, Any]:
    """The seed's `process` block; `started` is when the job was accepted."""
    info: dict[str, Any] = {
        "id": job.job_id,
        "main_processor": MAIN_PROCESSOR,
        "started": _iso(job.created_at),
    }
    if finished and job.finished_at is not None:
        info["completed"] = _iso(job.finished_at)
        info["duration_ms"] = int((job.finished_at - job.created_at).total_seconds() * 1000)
    return info


def error_body(code: str, message: str) -> dict[str, Any]:
    """An error answer of the /api/ routes."""
    return {"status": "error", "worker": WORKER, "error": {"code": code, "message": message}}


def acknowledgement(job: Job, callback_url: str | None) -> dict[str, Any]:
    """The `202` answer to POST /api/pdf/process(-url)."""
    return {
        "status": "accepted",
        "worker": WORKER,
        "process": process_info(job),
        "job": {"id": seed_id(job)},
        "webhook": {"delivered_to": callback_url} if callback_url else None,
        "error": None,
    }


async def load_result(ctx: Context, job: Job) -> ExtractionResult | None:
    """The stored result of a completed job (None otherwise, or when it has gone missing)."""
    if job.status is not JobStatus.COMPLETED:
        return None
    try:
        raw = await ctx.storage.get_bytes(job_result_key(job))
    except ObjectNotFound:
        # Never raise here: the terminal webhook must still go out, or the job never "ends".
        log.error("job %s is completed but its result.json is missing", job.job_id)
        return None
    return ExtractionResult.model_validate_json(raw)


def result_data(job: Job, result: ExtractionResult | None, base_url: str) -> dict[str, Any]:
    """The seed's `data` of a completed job: the text inline, the archive as a link."""
    parts: list[str] = []
    contents: list[dict[str, Any]] = []
    used, truncated = 0, False
    method = extraction_method(job)
    for page in result.pages if result else ():
        content = page_content(method, page)
        if used + len(content) > MAX_INLINE_CHARS:
            truncated = True
            break
        used += len(content)
        parts.append(f"\n--- Seite {page.number} ---\n{content}")
        contents.append({"page": page.number, "content": content})
    metadata: dict[str, Any] = dict(result.metadata or {}) if result else {}
    metadata.update(
        file_name=job.filename,
        file_size=job.source_size,
        page_count=result.page_count if result else None,
        format="pdf",
        extraction_method=method,
        text_contents=contents,
    )
    link = f"{base_url}/v1/jobs/{job.job_id}"
    data: dict[str, Any] = {
        "extracted_text": "".join(parts),
        "metadata": metadata,
        "process_id": job.job_id,
        "result_url": f"{link}/result",
    }
    if truncated:
        data["truncated"] = True
    if result is not None and result.transformed is not None:
        # The template's document (README "LLM methods"); also the artifact transformed.md.
        data["transformed_text"] = result.transformed
    if archive_name(job) is not None:
        data["images_archive_url"] = f"{base_url}/api/jobs/{job.job_id}/download-archive"
    return data


def terminal_payload(job: Job, result: ExtractionResult | None, base_url: str) -> dict[str, Any]:
    """The seed's `completed` or `error` document of a finished job."""
    if job.status is JobStatus.COMPLETED:
        return {
            "status": "completed",
            "worker": WORKER,
            "jobId": seed_id(job),
            "process": process_info(job, finished=True),
            "data": result_data(job, result, base_url),
            "error": None,
        }
    error = job.error
    return {
        "status": "error",
        "worker": WORKER,
        "jobId": seed_id(job),
        "process": process_info(job),
        "data": None,
        "error": {
            "code": error.code if error else "CANCELLED",
            "message": error.message if error else "the job was cancelled",
        },
    }


async def webhook_body(ctx: Context, job: Job) -> str:
    """The body of a seed job's terminal webhook (signed and sent like every other)."""
    result = await load_result(ctx, job)
    payload = terminal_payload(job, result, ctx.settings.base_url)
    # UTF-8 rather than \u escapes: up to 3 bytes a character instead of 6.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def envelope(
    job: Job, hook: WebhookState | None, result: ExtractionResult | None, base_url: str
) -> dict[str, Any]:
    """GET /api/jobs/{id}: the job in the seed's `{"status": "success", "data": …}` envelope."""
    data = public_view(job, hook, base_url)
    data.update(
        job_id=seed_id(job),
        pdfrelay_job_id=job.job_id,
        job_type=MAIN_PROCESSOR,
        # The Secretary called a waiting job "pending".
        status="pending" if job.status is JobStatus.QUEUED else job.status.value,
    )
    if job.status is JobStatus.COMPLETED:
        data["results"] = result_data(job, result, base_url)
    return {"status": "success", "data": data}

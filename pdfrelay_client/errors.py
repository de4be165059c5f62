"""The client's errors: one hierarchy, one class per kind of answer, the service's codes as data.

`ApiError.code` is the service's stable code (`ErrorCode`, the same names as the service's
`shared/errors.py`; a test keeps the two equal). The class says what a caller can do about it:
fix the input (`InvalidInput`), authenticate (`Unauthorized`), come back later (`Busy`, raised
after the client's own bounded retries ran out), and so on.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdfrelay_client.models import Job


class ErrorCode(StrEnum):
    """The service's stable error codes (README "HTTP API", error table)."""

    NOT_A_PDF = "NOT_A_PDF"
    EMPTY_FILE = "EMPTY_FILE"
    PDF_ENCRYPTED = "PDF_ENCRYPTED"
    PDF_DAMAGED = "PDF_DAMAGED"
    TOO_MANY_PAGES = "TOO_MANY_PAGES"
    PAGE_TOO_LARGE = "PAGE_TOO_LARGE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    EXTRACTION_TIMEOUT = "EXTRACTION_TIMEOUT"
    EXTRACTION_CRASHED = "EXTRACTION_CRASHED"
    OCR_UNAVAILABLE = "OCR_UNAVAILABLE"
    SOURCE_UNREACHABLE = "SOURCE_UNREACHABLE"
    INVALID_OPTIONS = "INVALID_OPTIONS"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    WEBHOOK_URL_REFUSED = "WEBHOOK_URL_REFUSED"
    QUEUE_FULL = "QUEUE_FULL"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"
    SOURCE_NOT_ALLOWED = "SOURCE_NOT_ALLOWED"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    DECOMPRESSION_LIMIT = "DECOMPRESSION_LIMIT"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    BATCH_REFUSED = "BATCH_REFUSED"
    TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
    TARGET_URL_REFUSED = "TARGET_URL_REFUSED"
    TARGET_UNREACHABLE = "TARGET_UNREACHABLE"
    LLM_NOT_CONFIGURED = "LLM_NOT_CONFIGURED"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    LLM_REFUSED = "LLM_REFUSED"
    LLM_BUDGET_EXCEEDED = "LLM_BUDGET_EXCEEDED"


def as_code(raw: str) -> ErrorCode | str:
    """The code as an `ErrorCode`, or the string itself when this client does not know it yet."""
    try:
        return ErrorCode(raw)
    except ValueError:
        return raw


class PdfRelayError(Exception):
    """Base of everything this client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailed(PdfRelayError):
    """The service could not be reached, or closed the connection, or did not answer in time."""


class WaitTimeout(PdfRelayError, TimeoutError):
    """`wait(…, timeout=…)` ran out before the job ended (the job goes on)."""


class ApiError(PdfRelayError):
    """The service answered with an error: `{"error": {"code", "message"}}`."""

    def __init__(
        self,
        status: int,
        code: ErrorCode | str,
        message: str,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.detail = message
        self.retry_after = retry_after
        self.body = body or {}
        """The whole `error` object (`BATCH_REFUSED` has `items`: every file and why)."""


class InvalidInput(ApiError):
    """The request was refused for what it holds (400, 403, 405, 408, 413, 415, 422): fix it."""


class Unauthorized(ApiError):
    """No API key, or a wrong one (401)."""


class NotFound(ApiError):
    """No such job of this tenant, or no such result or artifact (404)."""


class Conflict(ApiError):
    """The job's state does not allow it (cancelling an ended job), or an idempotency clash."""


class Busy(ApiError):
    """429/503 still after the client's bounded retries: come back after `retry_after`."""


class ServerError(ApiError):
    """The service failed (500 `INTERNAL`, or an answer that is not the service's)."""


class JobFailed(PdfRelayError):
    """A job ended `failed` (or `cancelled`) where its result was asked for; `.job` says why."""

    def __init__(self, job: Job) -> None:
        err = job.error
        detail = f"{err.code}: {err.message}" if err else job.status
        super().__init__(f"job {job.job_id} {job.status}: {detail}")
        self.job = job
        self.code: ErrorCode | str | None = err.code if err else None


def error_for(
    status: int,
    code: str,
    message: str,
    retry_after: float | None = None,
    body: dict[str, Any] | None = None,
) -> ApiError:
    """The `ApiError` subclass for an error answer."""
    cls: type[ApiError]
    if status == 401:
        cls = Unauthorized
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status in (429, 503):
        cls = Busy
    elif 400 <= status < 500:
        cls = InvalidInput
    else:
        cls = ServerError
    return cls(status, as_code(code), message, retry_after, body)

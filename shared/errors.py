"""The error hierarchy: every failure a client can see has a stable code and a human message."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine-readable error codes (CONTRACT.md)."""

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
    LLM_NOT_CONFIGURED = "LLM_NOT_CONFIGURED"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    LLM_REFUSED = "LLM_REFUSED"
    LLM_BUDGET_EXCEEDED = "LLM_BUDGET_EXCEEDED"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    BATCH_REFUSED = "BATCH_REFUSED"
    TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
    TARGET_URL_REFUSED = "TARGET_URL_REFUSED"
    TARGET_UNREACHABLE = "TARGET_UNREACHABLE"


class PdfRelayError(Exception):
    """Base of every error pdfrelay raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class StartupError(PdfRelayError):
    """The process cannot start as configured (its port is taken): one line, exit code 2."""


class PermanentError(PdfRelayError):
    """Retrying cannot help: the job fails with this code at once."""


class TransientError(PdfRelayError):
    """A dependency is away for now: retry later with backoff."""

    code = ErrorCode.SERVICE_UNAVAILABLE


class QueueFullError(TransientError):
    """The broker refused the message because the queue is at its length limit."""

    code = ErrorCode.QUEUE_FULL


class WriteConflict(TransientError):
    """A conditional write was refused: the object is no longer at the version its writer
    last saw (someone else wrote it since). Transient where nobody resolves it: a retry reads
    again."""


class JobCancelled(PdfRelayError):
    """The job was cancelled: its worker was stopped, or never started."""

    code = ErrorCode.CANCELLED


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_A_PDF: 415,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.EMPTY_FILE: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.INVALID_OPTIONS: 422,
    ErrorCode.WEBHOOK_URL_REFUSED: 422,
    ErrorCode.SOURCE_UNREACHABLE: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.SOURCE_NOT_ALLOWED: 403,
    ErrorCode.IDEMPOTENCY_MISMATCH: 409,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.DECOMPRESSION_LIMIT: 422,
    ErrorCode.PAGE_TOO_LARGE: 422,
    ErrorCode.LLM_NOT_CONFIGURED: 422,
    ErrorCode.LLM_BUDGET_EXCEEDED: 429,
    ErrorCode.BATCH_TOO_LARGE: 413,
    ErrorCode.BATCH_REFUSED: 422,
    ErrorCode.TARGET_NOT_ALLOWED: 422,
    ErrorCode.TARGET_URL_REFUSED: 422,
}


def http_status(code: ErrorCode) -> int:
    """The HTTP status the ingress answers for an error code (500 for anything unlisted)."""
    return HTTP_STATUS.get(code, 500)


class JobNotFound(PermanentError):
    code = ErrorCode.NOT_FOUND


class QuotaExceeded(TransientError):
    """The tenant has too many pages in flight; `excess_pages` must end before this one fits."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, message: str, excess_pages: int) -> None:
        super().__init__(message)
        self.excess_pages = excess_pages


class WorkerCrashed(PdfRelayError):
    """The worker process died without an answer (killed, segfault, out of memory)."""

    code = ErrorCode.EXTRACTION_CRASHED


class FileTooLarge(PermanentError):
    code = ErrorCode.FILE_TOO_LARGE


class NotAPdf(PermanentError):
    code = ErrorCode.NOT_A_PDF


class EmptyFile(PermanentError):
    code = ErrorCode.EMPTY_FILE


class NotRoutable(TransientError):
    """No queue is bound for the message (a vanished reply queue, or missing topology)."""

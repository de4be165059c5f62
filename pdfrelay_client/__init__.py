"""pdfrelay's Python client: submit PDFs, follow jobs, fetch results, verify webhooks.

Needs only aiohttp and standardwebhooks (no PyMuPDF, no RabbitMQ client): it talks to the
service's HTTP API. `Client` for plain code, `AsyncClient` for asyncio code.
"""

from pdfrelay_client.aio import DEFAULT_URL, AsyncClient
from pdfrelay_client.errors import (
    ApiError,
    Busy,
    Conflict,
    ConnectionFailed,
    ErrorCode,
    InvalidInput,
    JobFailed,
    NotFound,
    PdfRelayError,
    ServerError,
    Unauthorized,
    WaitTimeout,
)
from pdfrelay_client.models import (
    Artifact,
    Batch,
    BatchItem,
    BatchResult,
    Job,
    JobErrorInfo,
    JobPage,
    S3Object,
    Webhook,
)
from pdfrelay_client.sync import Client
from pdfrelay_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Artifact",
    "AsyncClient",
    "Batch",
    "BatchItem",
    "BatchResult",
    "Busy",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ErrorCode",
    "InvalidInput",
    "Job",
    "JobErrorInfo",
    "JobFailed",
    "JobPage",
    "NotFound",
    "PdfRelayError",
    "S3Object",
    "ServerError",
    "Unauthorized",
    "WaitTimeout",
    "Webhook",
    "WebhookVerificationError",
    "verify_webhook",
]

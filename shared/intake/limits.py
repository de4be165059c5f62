"""Bounds on what a client may send, checked at the doors before any work or storage access."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ErrorCode, PermanentError
from shared.settings import Settings

RESERVED_PREFIXES = ("uploads/", "jobs/", "results/", "index/", "inflight/")
"""The service's own keys in its bucket: never a caller's source."""
MAX_CLIENT_REF_CHARS = 512
MAX_WEBHOOK_URL_CHARS = 2048
MAX_WEBHOOK_TOKEN_CHARS = 512
MAX_FILENAME_CHARS = 255
MAX_IDEMPOTENCY_KEY_CHARS = 255

SOURCE_REFUSED = "the source is not one this tenant may read"
"""One message for every refused source: it tells nothing about whether the object exists."""


def check_source(settings: Settings, tenant: str, bucket: str | None, key: str) -> None:
    """Refuse a `source.s3` the tenant may not read, before anything touches S3.

    A tenant may read only the buckets `source_buckets` lists for it (or for "*"), and never
    the service's own keys (`RESERVED_PREFIXES` in the service's bucket).

    Raises:
        PermanentError: SOURCE_NOT_ALLOWED, with the same message whatever the reason.
    """
    name = bucket or settings.s3_bucket
    allowed = (*settings.source_buckets.get(tenant, ()), *settings.source_buckets.get("*", ()))
    own = name == settings.s3_bucket
    normal = key.lstrip("/")
    if (
        name not in allowed
        or (own and normal.startswith(RESERVED_PREFIXES))
        or any(seg in (".", "..") for seg in normal.split("/"))
    ):
        raise PermanentError(SOURCE_REFUSED, ErrorCode.SOURCE_NOT_ALLOWED)


def check_webhook_url(url: str) -> None:
    """Refuse credentials in a webhook URL (`user:pass@`): they would be echoed and stored in the
    clear, and aiohttp refuses them next to a token. The token field is the way to authenticate.

    Raises:
        PermanentError: WEBHOOK_URL_REFUSED.
    """
    try:
        netloc = urlsplit(url).netloc
    except ValueError as exc:
        raise PermanentError(
            "webhook URL refused: not a URL", ErrorCode.WEBHOOK_URL_REFUSED
        ) from exc
    if "@" in netloc:
        raise PermanentError(
            "webhook URL refused: credentials in the URL are not accepted; use the webhook token",
            ErrorCode.WEBHOOK_URL_REFUSED,
        )


def check_length(name: str, value: str | None, limit: int) -> None:
    """Raises PermanentError (INVALID_REQUEST) when `value` is longer than `limit` characters."""
    if value is not None and len(value) > limit:
        raise PermanentError(
            f"{name} must be at most {limit} characters", ErrorCode.INVALID_REQUEST
        )


def loads(text: str | bytes, what: str, code: ErrorCode) -> Any:
    """`json.loads`, a document nested too deeply being the client's error (`code`), not a 500."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise PermanentError(f"{what} is nested too deeply", code) from exc
    except ValueError as exc:
        raise PermanentError(f"{what} is not valid JSON", code) from exc

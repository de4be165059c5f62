"""Verifying the webhooks the service sends (Standard Webhooks: ``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks import WebhookVerificationError as _Refused

from pdfrelay_client.errors import PdfRelayError


class WebhookVerificationError(PdfRelayError):
    """The body was not signed with the secret (or headers are missing, or it is too old)."""


def verify_webhook(
    body: bytes | str, headers: Mapping[str, str], secret: str | Sequence[str]
) -> dict[str, Any]:
    """Check a received webhook and return its event (``type``, ``timestamp``, ``data``).

    Args:
        body: The request body exactly as received (do not re-serialise it).
        headers: The request headers (any case).
        secret: The service's ``PDFRELAY_WEBHOOK_SECRET`` (``whsec_…``); during a rotation
            several, as a sequence or space/comma-separated: any one may have signed it.

    Raises:
        WebhookVerificationError: No signature matches, a header is missing, or the timestamp
            is more than 5 minutes off (a replay).
    """
    secrets = re.split(r"[\s,]+", secret.strip()) if isinstance(secret, str) else list(secret)
    plain = dict(headers.items())
    reason = "no secret given"
    for one in filter(None, secrets):
        hook = Webhook(one)
        try:
            hook.verify(body, plain, json_parse=False)
        except _Refused as exc:
            reason = str(exc)
            continue
        try:
            event: Any = json.loads(body)
        except ValueError as exc:
            raise WebhookVerificationError("the webhook body is not JSON") from exc
        if not isinstance(event, dict):
            raise WebhookVerificationError("the webhook body is not a JSON object")
        return event
    raise WebhookVerificationError(f"webhook not verified: {reason}")

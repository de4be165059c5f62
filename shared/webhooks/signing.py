"""Standard Webhooks signatures: ``whsec_`` secrets, ``v1,<base64 HMAC-SHA256>``, rotation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Sequence

from shared.errors import ErrorCode, PermanentError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
DEFAULT_TOLERANCE_S = 300
_MIN_SECRET_BYTES = 24
_SIGNATURE_VERSION = "v1"


def generate_secret(nbytes: int = 32) -> str:
    """Generate a new random signing secret.

    Args:
        nbytes: Number of random bytes (at least 24; the Standard Webhooks range is 24-64).

    Returns:
        A secret of the form ``whsec_<base64>``.

    Raises:
        ValueError: If ``nbytes`` is out of range.
    """
    if not _MIN_SECRET_BYTES <= nbytes <= 64:
        raise ValueError(f"nbytes must be between {_MIN_SECRET_BYTES} and 64, got {nbytes}")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """Decode a ``whsec_`` secret (the prefix is optional) into its key bytes.

    Args:
        secret: The secret as configured.

    Returns:
        The HMAC key.

    Raises:
        ValueError: If the secret is empty or not valid base64. The message never contains
            the secret itself.
    """
    encoded = secret.removeprefix(SECRET_PREFIX).strip()
    # Accept unpadded base64 as the reference verifier does.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not valid base64 after the 'whsec_' prefix") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _keys(secrets: Sequence[str]) -> list[bytes]:
    if isinstance(secrets, str):
        raise TypeError("pass a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("at least one webhook secret is required")
    return [decode_secret(secret) for secret in secrets]


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.digest()


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """Compute the ``webhook-signature`` header value.

    Args:
        msg_id: The ``webhook-id`` (stable across retries of one event).
        timestamp: The ``webhook-timestamp`` in whole Unix seconds.
        body: The exact request body bytes.
        secrets: One secret, or several during rotation (each yields one signature).

    Returns:
        ``v1,<base64>`` signatures separated by single spaces, in the order of ``secrets``.

    Raises:
        TypeError: If ``secrets`` is a single string rather than a sequence.
        ValueError: If there is no secret or one is malformed.
    """
    signatures = (
        base64.b64encode(_digest(key, msg_id, timestamp, body)).decode("ascii")
        for key in _keys(secrets)
    )
    return " ".join(f"{_SIGNATURE_VERSION},{signature}" for signature in signatures)


def verify(
    msg_id: str,
    timestamp: str | int,
    body: bytes,
    signature_header: str,
    secrets: Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a received webhook's signature and timestamp.

    Args:
        msg_id: The received ``webhook-id``.
        timestamp: The received ``webhook-timestamp`` (Unix seconds).
        body: The exact received body bytes.
        signature_header: The received ``webhook-signature`` (space-separated signatures).
        secrets: The secrets any of which may have signed it.
        tolerance_s: How far the timestamp may be from ``now``, either way.
        now: The current Unix time; the clock when omitted.

    Raises:
        PermanentError: With code ``UNAUTHORIZED`` if the timestamp is malformed or outside
            the tolerance, or no signature matches any secret.
        TypeError: If ``secrets`` is a single string rather than a sequence.
        ValueError: If there is no secret or one is malformed.
    """
    keys = _keys(secrets)
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        raise PermanentError("invalid webhook-timestamp", ErrorCode.UNAUTHORIZED) from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        raise PermanentError("webhook-timestamp outside the tolerance", ErrorCode.UNAUTHORIZED)

    received: list[bytes] = []
    for item in signature_header.split():
        version, _, encoded = item.partition(",")
        if version != _SIGNATURE_VERSION:
            continue
        try:
            received.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue

    matched = False
    for key in keys:
        expected = _digest(key, msg_id, sent_at, body)
        for candidate in received:
            # No early exit: the time taken must not depend on which signature matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise PermanentError("no matching webhook signature", ErrorCode.UNAUTHORIZED)

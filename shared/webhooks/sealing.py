"""Sealing data at rest with the webhook secret: AES-256-GCM under an HKDF-derived key.

A job's terminal webhook carries the client's token, which must never be stored in the clear,
yet `POST /v1/jobs/{id}/webhook/redeliver` has to send it again. The webhooks handler (the
only process that holds the signing secret) seals the delivery into the job's webhook record
and opens it again on a redelivery request.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.webhooks.signing import decode_secret

_INFO = b"pdfrelay webhook-delivery seal v1"
_PREFIX = "v1."
_NONCE_BYTES = 12


def _derive(secret: str) -> AESGCM:
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO).derive(decode_secret(secret))
    return AESGCM(key)


class Sealer:
    """Seals with the first (newest) secret, opens with any of them (key rotation)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        """Derive one key per secret.

        Args:
            secrets: The webhook signing secrets, newest first.

        Raises:
            ValueError: If there is no secret or one is malformed.
        """
        if isinstance(secrets, str) or not secrets:
            raise ValueError("at least one webhook secret (as a sequence) is required")
        self._keys = [_derive(s) for s in secrets]

    def seal(self, plaintext: bytes, context: bytes) -> str:
        """Encrypt and authenticate `plaintext`, bound to `context` (e.g. the job id).

        Args:
            plaintext: The data to protect.
            context: Associated data that must match when opening.

        Returns:
            ``v1.<base64 of nonce and ciphertext>``.
        """
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[0].encrypt(nonce, plaintext, context)
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, context: bytes) -> bytes:
        """Decrypt what `seal` made with any of the secrets.

        Args:
            sealed: The value `seal` returned.
            context: The same associated data as when sealing.

        Returns:
            The plaintext.

        Raises:
            ValueError: If the value is malformed, was sealed for another context, or no
                current secret opens it.
        """
        if not sealed.startswith(_PREFIX):
            raise ValueError("not a sealed value")
        try:
            raw = base64.b64decode(sealed.removeprefix(_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("sealed value is not valid base64") from None
        nonce, data = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for key in self._keys:
            try:
                return key.decrypt(nonce, data, context)
            except InvalidTag:
                continue
        raise ValueError("no current webhook secret opens the sealed value")

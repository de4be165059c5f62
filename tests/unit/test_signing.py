"""Standard Webhooks signing: our signatures pass the reference verifier and vice versa."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.errors import ErrorCode, PermanentError
from shared.webhooks.signing import decode_secret, generate_secret, sign, verify

BODY = b'{"type": "job.completed", "data": {"job_id": "j1", "text": "gr\xc3\xbc\xc3\x9fe"}}'


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_known_vector_from_the_specification() -> None:
    signature = sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_reference_verifier_accepts_our_signature() -> None:
    secret = generate_secret()
    now = int(time.time())
    headers = _headers("evt_1", now, sign("evt_1", now, BODY, [secret]))
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "job.completed",
        "data": {"job_id": "j1", "text": "grüße"},
    }


def test_rotation_each_secret_verifies_with_the_reference_verifier() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    signature = sign("evt_2", now, BODY, [new, old])
    assert len(signature.split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, _headers("evt_2", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, _headers("evt_2", now, signature))


def test_reference_verifier_rejects_tampering() -> None:
    secret = generate_secret()
    now = int(time.time())
    signature = sign("evt_3", now, BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", _headers("evt_3", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, _headers("evt_4", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, _headers("evt_3", now + 1, signature))


def test_our_verifier_accepts_the_reference_signature() -> None:
    secret = generate_secret()
    now = int(time.time())
    theirs = Webhook(secret).sign("evt_5", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    verify("evt_5", str(now), BODY, theirs, [secret])


def test_verify_with_rotation_and_unknown_versions() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    header = "v1a,c29tZXRoaW5n " + sign("evt_6", now, BODY, [old])
    verify("evt_6", now, BODY, header, [new, old])
    with pytest.raises(PermanentError) as info:
        verify("evt_6", now, BODY, header, [new])
    assert info.value.code == ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: {**a, "body": a["body"] + b"x"}, "no matching"),
        (lambda a: {**a, "msg_id": "other"}, "no matching"),
        (lambda a: {**a, "signature_header": "v1,not*base64"}, "no matching"),
        (lambda a: {**a, "signature_header": ""}, "no matching"),
        (lambda a: {**a, "timestamp": "yesterday"}, "invalid webhook-timestamp"),
        (lambda a: {**a, "now": a["now"] + 301}, "tolerance"),
        (lambda a: {**a, "now": a["now"] - 301}, "tolerance"),
    ],
)
def test_verify_rejects(mutate: Callable[[dict[str, Any]], dict[str, Any]], message: str) -> None:
    secret = generate_secret()
    now = 1_700_000_000
    args: dict[str, Any] = {
        "msg_id": "evt_7",
        "timestamp": str(now),
        "body": BODY,
        "signature_header": sign("evt_7", now, BODY, [secret]),
        "now": float(now),
    }
    verify("evt_7", str(now), BODY, str(args["signature_header"]), [secret], now=float(now))
    changed = mutate(args)
    with pytest.raises(PermanentError, match=message):
        verify(
            changed["msg_id"],
            changed["timestamp"],
            changed["body"],
            changed["signature_header"],
            [secret],
            now=changed["now"],
        )


def test_generate_secret_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(decode_secret(secret)) == 32
    assert secret != generate_secret()
    assert len(decode_secret(generate_secret(64))) == 64
    with pytest.raises(ValueError, match="between"):
        generate_secret(8)


def test_decode_secret_accepts_unpadded_and_unprefixed() -> None:
    key = b"0123456789abcdefghijklmnopqrstuv!"
    encoded = base64.b64encode(key).decode()
    assert decode_secret(encoded) == key
    assert decode_secret("whsec_" + encoded.rstrip("=")) == key


@pytest.mark.parametrize("secret", ["whsec_", "whsec_%%%notbase64", ""])
def test_bad_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as info:
        sign("evt", 1, BODY, [secret])
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(info.value)


def test_secrets_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match="sequence"):
        sign("evt", 1, BODY, generate_secret())
    with pytest.raises(ValueError, match="at least one"):
        sign("evt", 1, BODY, [])

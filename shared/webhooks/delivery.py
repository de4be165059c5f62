"""One webhook delivery attempt: signed headers, a POST to the checked address, a verdict."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import aiohttp

from shared.errors import PermanentError, TransientError
from shared.webhooks.signing import sign
from shared.webhooks.ssrf import SsrfConnector, SsrfPolicy, pinned

Outcome = Literal["delivered", "retry", "gone", "refused"]

USER_AGENT = "pdfrelay-webhooks/1"
DEFAULT_TIMEOUT_S = 15.0
_MAX_ERROR_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to.

    Attributes:
        outcome: ``delivered`` (2xx), ``retry`` (any other answer, timeout or connection
            error), ``gone`` (410: stop for good) or ``refused`` (SSRF policy: permanent).
        status: The HTTP status, when the receiver answered.
        error: A short description of the failure; never contains secrets or tokens.
        retry_after_s: The receiver's ``Retry-After`` on 429/503, clamped to the bounds.
        elapsed_s: Wall time the attempt took.
    """

    outcome: Outcome
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    elapsed_s: float = 0.0


def _check_header_value(name: str, value: str) -> None:
    if _CONTROL.search(value):
        # Say which header, never the value: it may be a secret.
        raise ValueError(f"{name} contains control characters")


def build_headers(
    event_id: str,
    timestamp: int,
    body: bytes,
    secrets: Sequence[str],
    token: str | None,
) -> dict[str, str]:
    """Build the headers of one attempt (Standard Webhooks, plus the client's token).

    Args:
        event_id: The ``webhook-id``; the same for every attempt of one event.
        timestamp: The ``webhook-timestamp`` of this attempt, Unix seconds.
        body: The exact body bytes that will be sent.
        secrets: The signing secrets (several during rotation: one signature each).
        token: The job's ``webhook_token``, sent as ``Authorization: Bearer`` and
            ``X-Callback-Token``; None to send neither.

    Returns:
        The request headers.

    Raises:
        ValueError: If the event id or token is empty or contains control characters, or
            a secret is malformed.
        TypeError: If ``secrets`` is a single string.
    """
    if not event_id:
        raise ValueError("event id must not be empty")
    _check_header_value("event id", event_id)
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(event_id, timestamp, body, secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    if token is not None:
        if not token:
            raise ValueError("webhook token must not be empty")
        _check_header_value("webhook token", token)
        headers["Authorization"] = f"Bearer {token}"
        headers["X-Callback-Token"] = token
    return headers


def parse_retry_after(value: str | None, *, now: float, min_s: float, max_s: float) -> float | None:
    """Parse a ``Retry-After`` header (delay in seconds or an HTTP-date).

    Args:
        value: The header value, or None when absent.
        now: The current Unix time, for HTTP-dates.
        min_s: The smallest delay to return.
        max_s: The largest delay to return.

    Returns:
        The delay in seconds clamped to ``[min_s, max_s]``, or None if absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        delay = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        delay = when.timestamp() - now
    return min(max(delay, min_s), max_s)


def _describe(exc: BaseException, url: str) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        text = "TLS certificate verification failed"
    elif isinstance(exc, aiohttp.ClientSSLError):
        text = "TLS handshake failed"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        text = f"connection failed: {exc.os_error.strerror or type(exc.os_error).__name__}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        text = "server disconnected without answering"
    else:
        # The URL may carry credentials or a token in its query: never echo it.
        text = f"{type(exc).__name__}: {exc}".replace(url, "<url>")
    return text[:_MAX_ERROR_CHARS]


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    client_timeout: aiohttp.ClientTimeout,
) -> tuple[int, str | None]:
    async with session.post(
        url, data=body, headers=headers, allow_redirects=False, timeout=client_timeout
    ) as response:
        # The body is not read: a small answer is complete already and the connection goes
        # back to the pool; a large or slow one is not worth waiting for.
        return response.status, response.headers.get("Retry-After")


async def deliver(
    session: aiohttp.ClientSession,
    policy: SsrfPolicy,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    min_retry_after_s: float = 1.0,
    max_retry_after_s: float = 86_400.0,
) -> Attempt:
    """Make one delivery attempt and classify the result; never raises for network trouble.

    The URL is checked and resolved by ``policy`` first; a new connection goes to exactly
    those addresses (a pooled keep-alive one was opened to an address checked when it was
    made). ``session`` is used (and its connection pool reused) when it was built
    on an `SsrfConnector`; any other session is not trusted to connect to the checked
    address, and a one-off pinned session is used instead (correct, but slower: no pooling).
    Redirects are never followed.

    Args:
        session: The process's HTTP session, best built on an `SsrfConnector`.
        policy: The SSRF policy to check the URL against.
        url: The webhook URL.
        body: The exact (already signed) body bytes.
        headers: The headers from `build_headers`.
        timeout_s: Limit for the whole attempt, from DNS lookup to response headers.
        min_retry_after_s: Lower bound for an honoured ``Retry-After``.
        max_retry_after_s: Upper bound for an honoured ``Retry-After``.

    Returns:
        The attempt's outcome.
    """
    started = time.perf_counter()

    def done(
        outcome: Outcome,
        status: int | None = None,
        error: str | None = None,
        retry_after_s: float | None = None,
    ) -> Attempt:
        return Attempt(outcome, status, error, retry_after_s, time.perf_counter() - started)

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            host, _port, addresses = await policy.resolve_checked(url)
            with pinned(host, addresses):
                if isinstance(session.connector, SsrfConnector) and not session.trust_env:
                    status, retry_after = await _post(session, url, body, headers, timeout)
                else:
                    connector = SsrfConnector(policy, force_close=True)
                    async with aiohttp.ClientSession(connector=connector) as one_off:
                        status, retry_after = await _post(one_off, url, body, headers, timeout)
    except PermanentError as exc:
        return done("refused", error=exc.message)
    except TransientError as exc:
        return done("retry", error=exc.message)
    except TimeoutError:
        return done("retry", error=f"timed out after {timeout_s:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return done("retry", error=_describe(exc, url))
    except ValueError as exc:
        # The client refused to make the request (e.g. credentials in the URL next to an
        # Authorization header): no retry makes it, and the state must say so.
        return done("refused", error=f"the request cannot be made: {exc}")

    if 200 <= status < 300:
        return done("delivered", status)
    if status == 410:
        return done("gone", status, "HTTP 410 Gone: the receiver asked to stop")
    if 300 <= status < 400:
        return done("retry", status, f"HTTP {status}: redirects are not followed")
    delay = None
    if status in (429, 503):
        delay = parse_retry_after(
            retry_after, now=time.time(), min_s=min_retry_after_s, max_s=max_retry_after_s
        )
    return done("retry", status, f"HTTP {status}", delay)

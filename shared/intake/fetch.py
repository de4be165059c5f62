"""Fetching a job's source PDF: from its object, or from a URL (SSRF-checked, size-capped while
streaming, time-limited)."""

from __future__ import annotations

import asyncio

import aiohttp

from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, PermanentError, TransientError
from shared.intake.uploads import MAGIC_WINDOW, PDF_MAGIC
from shared.models import Job
from shared.runtime.context import Context
from shared.webhooks.ssrf import SsrfConnector, SsrfPolicy, check_url_syntax, pinned

CHUNK = 256 * 1024


def source_refused(exc: PermanentError) -> PermanentError:
    """Re-word an SSRF refusal for a source URL."""
    reason = exc.message.removeprefix("webhook URL refused: ")
    return PermanentError(f"source URL refused: {reason}", ErrorCode.SOURCE_UNREACHABLE)


async def check_source_url(url: str, policy: SsrfPolicy) -> None:
    """Submit-time check of a URL source (syntax, scheme, resolved addresses)."""
    try:
        check_url_syntax(url)
        await policy.resolve_checked(url)
    except PermanentError as exc:
        raise source_refused(exc) from exc
    except TransientError as exc:
        raise PermanentError(
            f"source URL unreachable: {exc.message}", ErrorCode.SOURCE_UNREACHABLE
        ) from exc


async def fetch_to_file(
    url: str, path: str, policy: SsrfPolicy, *, max_bytes: int, timeout_s: float
) -> int:
    """Download `url` to `path`; returns the size.

    Redirects are not followed (a redirect could lead anywhere the policy would refuse).

    Raises:
        PermanentError: SOURCE_UNREACHABLE (refused, HTTP error, timeout, not a PDF),
            FILE_TOO_LARGE (cut off while streaming).
    """
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            host, _port, addresses = await policy.resolve_checked(url)
            with pinned(host, addresses):
                connector = SsrfConnector(policy, force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    session.get(url, allow_redirects=False) as resp,
                ):
                    if resp.status != 200:
                        raise PermanentError(
                            f"source URL answered HTTP {resp.status}", ErrorCode.SOURCE_UNREACHABLE
                        )
                    head = b""
                    with open(path, "wb") as fh:  # noqa: ASYNC230 - chunked local writes
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            size += len(chunk)
                            if size > max_bytes:
                                raise PermanentError(
                                    f"the source is larger than the limit of {max_bytes} bytes",
                                    ErrorCode.FILE_TOO_LARGE,
                                )
                            if len(head) < MAGIC_WINDOW:
                                head += chunk[: MAGIC_WINDOW - len(head)]
                            fh.write(chunk)
    except PermanentError as exc:
        if exc.code == ErrorCode.WEBHOOK_URL_REFUSED:
            raise source_refused(exc) from exc
        raise
    except TransientError as exc:
        raise PermanentError(
            f"source URL unreachable: {exc.message}", ErrorCode.SOURCE_UNREACHABLE
        ) from exc
    except TimeoutError as exc:
        raise PermanentError(
            f"source URL did not answer within {timeout_s:g} s", ErrorCode.SOURCE_UNREACHABLE
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise PermanentError(
            f"source URL unreachable: {type(exc).__name__}", ErrorCode.SOURCE_UNREACHABLE
        ) from exc
    if size == 0:
        raise PermanentError("the source is empty", ErrorCode.EMPTY_FILE)
    if PDF_MAGIC not in head:
        raise PermanentError("the source is not a PDF (no %PDF- header)", ErrorCode.NOT_A_PDF)
    return size


async def fetch_source(ctx: Context, job: Job, pdf_path: str) -> None:
    """The job's source PDF into `pdf_path`: its URL fetched, or its object downloaded."""
    if job.source_url is not None:
        await fetch_to_file(
            job.source_url,
            pdf_path,
            SsrfPolicy(ctx.settings.webhook_allowed_networks),
            max_bytes=ctx.settings.max_file_bytes,
            timeout_s=ctx.settings.source_timeout_s,
        )
        return
    assert job.source_key is not None
    try:
        await ctx.storage.download(job.source_key, pdf_path, bucket=job.source_bucket)
    except ObjectNotFound as exc:
        raise PermanentError(
            "the source object does not exist", ErrorCode.SOURCE_UNREACHABLE
        ) from exc

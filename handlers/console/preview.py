"""`GET /v1/jobs/{job_id}/pages/{n}/preview?width=W`: one page as PNG, rendered on demand by the
extract side (the ingress never loads PyMuPDF) and kept in S3 beside the job's results."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from handlers.console.messages import PreviewReply, PreviewRequest, preview_key
from handlers.console.rpc import PreviewClient
from handlers.http.common import CTX, tenant_of
from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, PermanentError, TransientError, http_status
from shared.models import JobStatus
from shared.runtime.context import Context

log = logging.getLogger(__name__)

DEFAULT_WIDTH = 800
MIN_WIDTH = 64
PNG_HEADERS = {"Content-Type": "image/png", "Cache-Control": "private, max-age=86400"}


PREVIEWS = web.AppKey("previews", PreviewClient)


def setup(app: web.Application, ctx: Context) -> None:
    """The preview client, started and stopped with the app."""
    app[PREVIEWS] = PreviewClient(ctx)

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[PREVIEWS].start()
        yield
        await app[PREVIEWS].stop()

    app.cleanup_ctx.append(client_ctx)


async def get_preview(request: web.Request) -> web.Response:
    """`GET /v1/jobs/{job_id}/pages/{page}/preview?width=W`."""
    return await _preview(request, request.app[CTX], tenant_of(request))


def _number(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise PermanentError(
            f"{name} must be a whole number from {low} to {high}", ErrorCode.INVALID_REQUEST
        )
    return int(raw)


async def _preview(request: web.Request, ctx: Context, tenant: str) -> web.Response:
    job = await ctx.jobs.get(request.match_info["job_id"], tenant)
    page = _number(request.match_info["page"], "the page number", 1, 1, 10**9)
    high = ctx.settings.preview_max_width
    width = _number(request.query.get("width"), "width", DEFAULT_WIDTH, MIN_WIDTH, high)
    if job.status is not JobStatus.COMPLETED or job.result is None:
        raise PermanentError(
            f"the job is {job.status.value}; its pages can be previewed once it has completed",
            ErrorCode.CONFLICT,
        )
    count = job.result.page_count
    if page > count:
        raise PermanentError(
            f"page {page} is out of range: the document has {count} pages", ErrorCode.NOT_FOUND
        )
    if job.source_key is None:
        raise PermanentError(
            "the job's document was fetched from a URL and not kept: it has no preview",
            ErrorCode.NOT_FOUND,
        )
    key = preview_key(job.job_id, page, width)
    with contextlib.suppress(ObjectNotFound):
        return web.Response(body=await ctx.storage.get_bytes(key), headers=PNG_HEADERS)
    req = PreviewRequest(
        job_id=job.job_id,
        source_key=job.source_key,
        source_bucket=job.source_bucket,
        page=page,
        width=width,
    )
    reply = await request.app[PREVIEWS].render(key, req)
    if not reply.ok:
        raise _refusal(reply)
    try:
        body = await ctx.storage.get_bytes(key)
    except ObjectNotFound as exc:
        raise TransientError("the rendered preview is not stored yet; try again") from exc
    return web.Response(body=body, headers=PNG_HEADERS)


def _refusal(reply: PreviewReply) -> PermanentError | TransientError:
    message = f"the page could not be rendered: {reply.message or 'unknown error'}"
    try:
        code = ErrorCode(reply.code or "")
    except ValueError:
        return TransientError(message)
    if http_status(code) >= 500:
        # A crash, a timeout, storage away: another try may work.
        return TransientError(message)
    return PermanentError(message, code)

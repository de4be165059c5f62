"""`GET /v1/jobs/{job_id}/pages/{n}/preview?width=W`: one page as PNG, rendered on demand by the
extract side (the ingress never loads PyMuPDF) and kept in S3 beside the job's results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from pydantic import ValidationError

from handlers.console.messages import PreviewReply, PreviewRequest, preview_key
from shared.broker import publish
from shared.context import Context
from shared.errors import ErrorCode, PermanentError, TransientError, http_status
from shared.models import JobStatus
from shared.storage import ObjectNotFound

log = logging.getLogger(__name__)

DEFAULT_WIDTH = 800
MIN_WIDTH = 64
PNG_HEADERS = {"Content-Type": "image/png", "Cache-Control": "private, max-age=86400"}


class PreviewClient:
    """Asks the extract side to render previews; replies come to this process's own exclusive
    queue (named by the broker). Concurrent asks for one preview share one render."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Future[PreviewReply]] = {}
        self._renders: dict[str, asyncio.Task[PreviewReply]] = {}

    async def start(self) -> None:
        self._channel = await self._ctx.connection.channel()
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_reply, no_ack=True)

    async def stop(self) -> None:
        for task in list(self._renders.values()):
            task.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is None or future.done():
            return  # an answer after its asker gave up
        try:
            future.set_result(PreviewReply.model_validate_json(message.body))
        except ValidationError:
            future.set_result(PreviewReply(ok=False, code="INTERNAL", message="a bad reply"))

    async def render(self, key: str, req: PreviewRequest) -> PreviewReply:
        """The reply to `req` (one render per `key` at a time).

        Raises:
            TransientError: no reply within `preview_timeout_s`, or the broker is away.
        """
        task = self._renders.get(key)
        if task is None:
            task = asyncio.create_task(self._ask(req))
            self._renders[key] = task
            task.add_done_callback(lambda _t: self._renders.pop(key, None))
        return await asyncio.shield(task)

    async def _ask(self, req: PreviewRequest) -> PreviewReply:
        assert self._queue is not None
        timeout = self._ctx.settings.preview_timeout_s
        corr = uuid.uuid4().hex
        future: asyncio.Future[PreviewReply] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = future
        try:
            await publish(
                self._ctx.channel,
                self._ctx.topology.tasks,
                self._ctx.topology.PREVIEW_KEY,
                req,
                correlation_id=corr,
                reply_to=self._queue.name,
                expiration=timeout,
            )
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise TransientError(
                f"no worker rendered the preview within {timeout:g} s; try again shortly"
            ) from exc
        finally:
            self._waiting.pop(corr, None)


PREVIEWS = web.AppKey("previews", PreviewClient)


def setup(
    app: web.Application, ctx: Context, tenant_of: Callable[[web.Request], str]
) -> list[web.RouteDef]:
    """The preview client (started with the app) and its route."""
    app[PREVIEWS] = PreviewClient(ctx)

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[PREVIEWS].start()
        yield
        await app[PREVIEWS].stop()

    app.cleanup_ctx.append(client_ctx)

    async def get_preview(request: web.Request) -> web.Response:
        return await _preview(request, ctx, tenant_of(request))

    return [web.get("/v1/jobs/{job_id}/pages/{page}/preview", get_preview)]


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

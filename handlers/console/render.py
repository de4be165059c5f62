"""Preview handler (extract side): one PreviewRequest → render the page in the worker pool →
store the PNG → reply to the asking ingress."""

from __future__ import annotations

import logging
import tempfile

from aio_pika.abc import AbstractIncomingMessage

from handlers.console.messages import PreviewReply, PreviewRequest, preview_key
from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, NotRoutable, PdfRelayError, PermanentError
from shared.extraction.pool import WorkRequest, extract_limits
from shared.models import ExtractOptions
from shared.runtime.context import ExtractContext

log = logging.getLogger(__name__)


async def handle(
    req: PreviewRequest, ctx: ExtractContext, message: AbstractIncomingMessage
) -> None:
    try:
        await _render(ctx, req)
        reply = PreviewReply(ok=True)
    except PdfRelayError as exc:  # refused, crashed, timed out, storage away: the asker hears
        reply = PreviewReply(ok=False, code=str(exc.code), message=exc.message)
    if not message.reply_to:
        return
    try:
        await ctx.broker.publish("", message.reply_to, reply, correlation_id=message.correlation_id)
    except NotRoutable:
        # The asking ingress has gone (or given up and restarted): the PNG stays cached.
        log.info("preview of job %s: nobody waits for the reply any more", req.job_id)


async def _render(ctx: ExtractContext, req: PreviewRequest) -> None:
    with tempfile.TemporaryDirectory(prefix="pdfrelay-preview-", dir=ctx.settings.spool_dir) as tmp:
        pdf_path = f"{tmp}/source.pdf"
        try:
            await ctx.storage.download(req.source_key, pdf_path, bucket=req.source_bucket)
        except ObjectNotFound as exc:
            raise PermanentError("the job's document is gone", ErrorCode.NOT_FOUND) from exc
        out = await ctx.pool.run(
            WorkRequest(
                pdf_path=pdf_path,
                out_dir=tmp,
                options=ExtractOptions(),
                limits=extract_limits(ctx.settings),
                preview=(req.page, req.width),
            ),
            lambda _done, _total: None,
        )
        key = preview_key(req.job_id, req.page, req.width)
        await ctx.storage.put_file(key, out.result_path, "image/png")

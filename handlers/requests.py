"""Broker door: ExtractRequest v1 messages from other services become jobs."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage

from shared.intake.limits import (
    MAX_WEBHOOK_TOKEN_CHARS,
    MAX_WEBHOOK_URL_CHARS,
    check_length,
    check_source,
    check_webhook_url,
)
from shared.intake.submit import Submission, Submitter
from shared.intake.targets import resolve_target
from shared.models import ExtractRequest
from shared.runtime.consumer import consume
from shared.runtime.context import Context

TENANT_HEADER = "x-pdfrelay-tenant"


async def handle(
    req: ExtractRequest, ctx: Context, message: AbstractIncomingMessage, submitter: Submitter
) -> None:
    header = (message.headers or {}).get(TENANT_HEADER)
    tenant = header if isinstance(header, str) and header else "default"
    if req.source.s3 is not None:
        check_source(ctx.settings, tenant, req.source.s3.bucket, req.source.s3.key)
    if req.webhook is not None:
        check_length("the webhook url", req.webhook.url, MAX_WEBHOOK_URL_CHARS)
        check_length("the webhook token", req.webhook.token, MAX_WEBHOOK_TOKEN_CHARS)
        check_webhook_url(req.webhook.url)
    await submitter.submit(
        ctx,
        Submission(
            tenant=tenant,
            door="broker",
            options=req.options,
            s3_bucket=req.source.s3.bucket if req.source.s3 else None,
            s3_key=req.source.s3.key if req.source.s3 else None,
            url=req.source.url,
            webhook=req.webhook,
            client_ref=req.client_ref,
            idempotency_key=message.message_id,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            target=await resolve_target(ctx.settings, tenant, req.target),
            recover=bool(message.redelivered),
        ),
    )


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Consume `pdfrelay.requests`; invalid requests are parked with their reason."""
    submitter = Submitter()

    async def bound(req: ExtractRequest, ctx: Context, message: AbstractIncomingMessage) -> None:
        await handle(req, ctx, message, submitter)

    await consume(
        ctx,
        ctx.topology.requests_queue,
        ExtractRequest,
        bound,
        prefetch=16,
        stop=stop,
        dead_letter=ctx.topology.requests_dead,
        backoff=ctx.topology.backoff(ctx.topology.requests_queue),
        max_body_bytes=ctx.settings.max_json_bytes,
    )

"""Object-drop door: a PDF written under `inbox/` becomes a job; its outcome lands in `outbox/`."""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from shared.adapters.storage import ObjectNotFound
from shared.doors.outbox import INBOX, outbox_key
from shared.doors.s3events import CreatedObject, S3Notification, created_objects
from shared.errors import ErrorCode, PermanentError, TransientError
from shared.intake.submit import Submission, Submitter
from shared.models import ExtractOptions, JobTarget, WebhookSpec
from shared.runtime.consumer import consume
from shared.runtime.context import Context

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = ExtractOptions(outputs=("text", "markdown", "metadata"))
OUTBOX_TARGET = JobTarget(kind="outbox")
META_OPTIONS = "x-amz-meta-pdfrelay-options"
META_WEBHOOK_URL = "x-amz-meta-pdfrelay-webhook-url"
META_WEBHOOK_TOKEN = "x-amz-meta-pdfrelay-webhook-token"  # noqa: S105 - a header name


async def submit_object(ctx: Context, obj: CreatedObject, submitter: Submitter) -> None:
    """Make the job for one dropped object (once per object version)."""
    try:
        info = await ctx.storage.stat(obj.key, bucket=obj.bucket)
    except ObjectNotFound:
        log.info("dropped object %s is gone already", obj.key)
        return
    try:
        raw = info.metadata.get(META_OPTIONS)
        options = ExtractOptions.model_validate_json(raw) if raw else DEFAULT_OPTIONS
        url = info.metadata.get(META_WEBHOOK_URL)
        webhook = WebhookSpec(url=url, token=info.metadata.get(META_WEBHOOK_TOKEN)) if url else None
        await submitter.submit(
            ctx,
            Submission(
                tenant="default",
                door="object-drop",
                options=options,
                s3_bucket=obj.bucket,
                s3_key=obj.key,
                webhook=webhook,
                client_ref=obj.key,
                filename=obj.key.rsplit("/", 1)[-1],
                idempotency_key=f"object-drop:{obj.bucket}/{obj.key}@{obj.version}",
                # An object is seen again only after its first sighting may have been cut short.
                recover=True,
                # The outcome lands in outbox/ as the job's target (`job.delivered` says so).
                target=OUTBOX_TARGET,
            ),
        )
    except (PermanentError, ValidationError) as exc:
        error = (
            {"code": str(exc.code), "message": exc.message}
            if isinstance(exc, PermanentError)
            else {"code": str(ErrorCode.INVALID_OPTIONS), "message": f"{META_OPTIONS}: {exc}"}
        )
        await ctx.storage.put_json(outbox_key(obj.key, ".error.json"), {"error": error})


async def handle_notification(
    note: S3Notification, ctx: Context, message: AbstractIncomingMessage, submitter: Submitter
) -> None:
    for obj in created_objects(note, ctx.settings.s3_bucket, INBOX):
        await submit_object(ctx, obj, submitter)


async def poll_inbox(
    ctx: Context, submitter: Submitter, done: set[tuple[str, str]] | None = None
) -> int:
    """One pass over `inbox/` for S3 servers without notifications; returns jobs considered.

    `done`: the (key, version)s a previous pass of this poller submitted; they are skipped, and
    the set keeps only what is still listed. Without it every object dropped so far cost three
    requests a pass (stat, idempotency, record), a pass per second, ever more of them."""
    objects = await ctx.storage.list_objects(INBOX)
    listed = {(info.key, info.etag.strip('"')) for info in objects}
    if done is not None:
        done &= listed
    for info in objects:
        version = (info.key, info.etag.strip('"'))
        if info.key.endswith("/") or (done is not None and version in done):
            continue
        await submit_object(ctx, CreatedObject(ctx.settings.s3_bucket, *version), submitter)
        if done is not None:
            done.add(version)
    return len(objects)


async def poll_forever(
    ctx: Context, submitter: Submitter, every_s: float, stop: asyncio.Event
) -> None:
    """`poll_inbox` every `every_s` until `stop`. A pass that meets storage or the broker away
    ends there and the next one tries again: the poller outlives an outage (it ended with the
    first one, and its process with it: the soak's door jobs that never ended, issue 21)."""
    done: set[tuple[str, str]] = set()
    while not stop.is_set():
        try:
            await poll_inbox(ctx, submitter, done)
        except TransientError as exc:
            log.warning("inbox poll stopped short, retried in %.1f s: %s", every_s, exc.message)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            continue


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Consume bucket notifications (the targets handler writes the outbox); poll if set."""
    submitter = Submitter()

    async def on_note(note: S3Notification, ctx: Context, message: AbstractIncomingMessage) -> None:
        await handle_notification(note, ctx, message, submitter)

    tasks = [
        consume(
            ctx,
            ctx.topology.object_drop,
            S3Notification,
            on_note,
            prefetch=8,
            stop=stop,
            dead_letter=ctx.topology.object_drop_dead,
            backoff=ctx.topology.backoff(ctx.topology.object_drop),
        ),
    ]
    if ctx.settings.object_drop_poll_s:
        tasks.append(poll_forever(ctx, submitter, ctx.settings.object_drop_poll_s, stop))
    await asyncio.gather(*tasks)

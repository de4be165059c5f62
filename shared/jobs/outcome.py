"""Announcing what happened to a job: events on the topic exchange and webhook deliveries."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aio_pika.abc import HeadersType

from shared.errors import NotRoutable, TransientError
from shared.jobs import batches
from shared.jobs.records import public_view
from shared.models import (
    DeliveryTask,
    Job,
    JobStatus,
    TargetState,
    WebhookDelivery,
    WebhookSpec,
    utcnow,
)
from shared.runtime.context import Context
from shared.webhooks.dispatch import enqueue

log = logging.getLogger(__name__)

PROGRESS_WEBHOOK_INTERVAL_S = 1.0

TERMINAL_EVENTS = {
    JobStatus.COMPLETED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}


def target_event(state: TargetState) -> str:
    """The event of a settled target: `job.delivered` or `job.delivery_failed`."""
    return "job.delivered" if state == "delivered" else "job.delivery_failed"


def event_id(job_id: str, event_type: str) -> str:
    """Stable across redeliveries and retries, so receivers can de-duplicate."""
    return f"msg_{job_id}_{event_type.replace('.', '_')}"


async def publish_event(
    ctx: Context, job: Job, event_type: str, view: dict[str, Any] | None = None
) -> None:
    """Publish the event with the job's view (`view`: built already, else read here)."""
    if view is None:
        view = await ctx.jobs.view(job, ctx.settings.base_url)
    await ctx.broker.publish(
        ctx.topology.events,
        event_type,
        json.dumps(view).encode(),
        message_id=event_id(job.job_id, event_type) if event_type != "job.progress" else None,
        headers=_event_headers(job),
    )


def _event_headers(job: Job) -> HeadersType:
    """A job event's headers: its job and tenant, and the batch of an item (the ingress's
    watcher follows a batch's items by it: `GET /v1/batches/{id}/events`)."""
    headers: HeadersType = {"job_id": job.job_id, "tenant": job.tenant}
    if job.batch_id is not None:
        headers["batch_id"] = job.batch_id
    return headers


async def announce_terminal(
    ctx: Context, job: Job, webhook: WebhookSpec | None, *, first: bool = False
) -> None:
    """Publish the terminal event and queue the webhook; safe to repeat (same event id).

    The job's view is built once for all of them. `first`: the ending was stored just now
    and no webhook of the job can have been delivered before (none asked for progress), so
    its webhook state is not read.
    """
    event_type = TERMINAL_EVENTS[job.status]
    door = ctx.doors.get(job.door)
    if door is not None:
        await door.ended(ctx, job)
    unsent = first and (webhook is None or not webhook.progress)
    view = (
        public_view(job, None, ctx.settings.base_url)
        if unsent
        else await ctx.jobs.view(job, ctx.settings.base_url)
    )
    if job.target is not None and job.target.state == "pending":
        # Its outputs go to the target off the extraction slots (handlers/targets.py), queued
        # before anyone hears of the end; a repeated ending queues it again, and the handler
        # finds it settled or the same keys.
        await queue_delivery(ctx, job)
    await publish_event(ctx, job, event_type, view)
    if job.batch_id is not None:
        await batches.signal(ctx, job.batch_id, job)
    if job.reply_to is not None:
        await _reply(ctx, job, event_type, view)
    if webhook is None:
        return
    await queue_webhook(ctx, job, webhook, event_type, event_id(job.job_id, event_type), view)


async def queue_delivery(ctx: Context, job: Job) -> None:
    """Queue the writing of the ended job's outputs to its target (`pdfrelay.targets`)."""
    await ctx.broker.publish(
        ctx.topology.tasks,
        ctx.topology.DELIVER_KEY,
        DeliveryTask(job_id=job.job_id, tenant=job.tenant),
        message_id=f"{job.job_id}.deliver",
    )


async def _reply(ctx: Context, job: Job, event_type: str, view: dict[str, Any]) -> None:
    """Answer a broker request on its `reply_to` queue, with its `correlation_id`."""
    assert job.reply_to is not None
    try:
        await ctx.broker.publish(
            "",
            job.reply_to,
            json.dumps({"type": event_type, "data": view}).encode(),
            message_id=event_id(job.job_id, event_type),
            correlation_id=job.correlation_id,
            headers={"job_id": job.job_id},
        )
    except NotRoutable:
        # The requester's reply queue is gone; the event on the exchange still stands.
        log.warning("job %s: reply queue %r no longer exists", job.job_id, job.reply_to)


async def queue_webhook(
    ctx: Context,
    job: Job,
    webhook: WebhookSpec,
    event_type: str,
    delivery_id: str,
    view: dict[str, Any] | None = None,
) -> None:
    """Put one webhook event on the dispatch queue; the webhooks handler signs and sends it."""
    door = ctx.doors.get(job.door) if event_type != "job.progress" else None
    # A door's clients may expect a terminal payload of their own (the seed's: its payloads).
    body = await door.webhook_body(ctx, job) if door is not None else None
    if body is None:
        if view is None:
            view = await ctx.jobs.view(job, ctx.settings.base_url)
        body = json.dumps(
            {"type": event_type, "timestamp": utcnow().isoformat(), "data": view},
            separators=(",", ":"),
        )
    delivery = WebhookDelivery(
        event_id=delivery_id,
        job_id=job.job_id,
        event_type=event_type,
        url=webhook.url,
        token=webhook.token,
        body=body,
    )
    await enqueue(ctx, delivery)


class ProgressWebhooks:
    """Queues `job.progress` webhooks for a job that asked for them, at most one per second.

    Best effort by design: progress is superseded by the next update and by the terminal
    event, so a broker hiccup here is logged and never fails or slows the extraction.
    """

    def __init__(self, ctx: Context, webhook: WebhookSpec | None) -> None:
        self._ctx = ctx
        self._webhook = webhook if webhook is not None and webhook.progress else None
        self._sent_at = float("-inf")

    async def send(self, job: Job) -> None:
        if self._webhook is None:
            return
        now = time.monotonic()
        if now - self._sent_at < PROGRESS_WEBHOOK_INTERVAL_S:
            return
        self._sent_at = now
        delivery_id = f"{event_id(job.job_id, 'job.progress')}_{job.progress.pages_done}"
        try:
            await queue_webhook(self._ctx, job, self._webhook, "job.progress", delivery_id)
        except TransientError as exc:
            log.warning("progress webhook of job %s not queued: %s", job.job_id, exc.message)

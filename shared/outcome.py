"""Announcing what happened to a job: events on the topic exchange and webhook deliveries."""

from __future__ import annotations

import json

from shared.broker import publish
from shared.context import Context
from shared.models import Job, JobStatus, WebhookDelivery, WebhookSpec, utcnow

TERMINAL_EVENTS = {
    JobStatus.COMPLETED: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}


def event_id(job_id: str, event_type: str) -> str:
    """Stable across redeliveries and retries, so receivers can de-duplicate."""
    return f"msg_{job_id}_{event_type.replace('.', '_')}"


async def publish_event(ctx: Context, job: Job, event_type: str) -> None:
    view = await ctx.jobs.view(job, ctx.settings.base_url)
    await publish(
        ctx.channel,
        ctx.topology.events,
        event_type,
        json.dumps(view).encode(),
        message_id=event_id(job.job_id, event_type) if event_type != "job.progress" else None,
        headers={"job_id": job.job_id, "tenant": job.tenant},
    )


async def announce_terminal(ctx: Context, job: Job, webhook: WebhookSpec | None) -> None:
    """Publish the terminal event and queue the webhook; safe to repeat (same event id)."""
    event_type = TERMINAL_EVENTS[job.status]
    await publish_event(ctx, job, event_type)
    if webhook is None:
        return
    view = await ctx.jobs.view(job, ctx.settings.base_url)
    body = json.dumps(
        {"type": event_type, "timestamp": utcnow().isoformat(), "data": view},
        separators=(",", ":"),
    )
    delivery = WebhookDelivery(
        event_id=event_id(job.job_id, event_type),
        job_id=job.job_id,
        event_type=event_type,
        url=webhook.url,
        token=webhook.token,
        body=body,
    )
    await publish(
        ctx.channel,
        ctx.topology.webhooks_exchange,
        ctx.topology.webhooks,
        delivery,
        message_id=delivery.event_id,
    )

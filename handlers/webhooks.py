"""Webhooks handler: one WebhookDelivery → one signed attempt → delivered, retry later, or dead;
and the writer that stores the delivery states behind them (shared/webhooks/statelog.py)."""

from __future__ import annotations

import asyncio
import functools
import logging

import aiohttp
from aio_pika.abc import AbstractIncomingMessage

from shared.errors import PermanentError
from shared.models import WebhookDelivery, WebhookRedeliver, WebhookState, WebhookStateBatch
from shared.obs.tracing import client_trace_config
from shared.runtime.consumer import consume
from shared.runtime.context import Context
from shared.webhooks.dispatch import (
    PROGRESS_EVENT,
    Dispatcher,
    Ladder,
    attempts_made,
    dispatcher_secrets,
    enqueue,
    next_state,
)
from shared.webhooks.sealing import Sealer
from shared.webhooks.ssrf import SsrfConnector, SsrfPolicy
from shared.webhooks.statelog import StateLog, write_states

log = logging.getLogger(__name__)


async def handle(
    d: Dispatcher, msg: WebhookDelivery, ctx: Context, message: AbstractIncomingMessage
) -> None:
    """Attempt the delivery; record the state, then republish (retry or dead) before the ack."""
    attempts = attempts_made(message) + 1
    result = await d.attempt(msg)
    ctx.metrics.webhook_attempts.labels(event=msg.event_type, outcome=result.outcome).inc()
    ctx.metrics.webhook_attempt_seconds.observe(result.elapsed_s)
    if msg.event_type != PROGRESS_EVENT:
        log.info(
            "webhook %s of job %s, attempt %d: %s%s",
            msg.event_type,
            msg.job_id,
            attempts,
            result.outcome,
            f" (HTTP {result.status})" if result.status is not None else "",
        )
    if msg.event_type == PROGRESS_EVENT:
        # Best effort: the next update or the terminal event supersedes a lost one.
        if result.outcome != "delivered":
            log.info("progress webhook of job %s not delivered: %s", msg.job_id, result.error)
        return
    step_wait = None
    if result.outcome == "retry":
        step_wait = d.ladder.next_wait(attempts, result.retry_after_s)
    await d.record(msg, next_state(msg, attempts, result, step_wait[1] if step_wait else None))
    if result.outcome == "delivered":
        return
    if step_wait is not None:
        await d.retry_later(msg, attempts, *step_wait)
        return
    await d.park(msg, attempts, result)
    ctx.metrics.dead_letters.labels(queue=ctx.topology.webhooks).inc()
    log.warning(
        "webhook %s of job %s is dead after %d attempt(s) (%s): %s",
        msg.event_type,
        msg.job_id,
        attempts,
        result.outcome,
        result.error,
    )


async def handle_redeliver(
    d: Dispatcher, req: WebhookRedeliver, ctx: Context, message: AbstractIncomingMessage
) -> None:
    """Send the job's last terminal delivery again: same webhook-id, same body, attempts reset."""
    state = await ctx.jobs.webhook_state(req.job_id)
    if state is None or state.sealed is None:
        log.warning("no stored webhook delivery of job %s to redeliver", req.job_id)
        return
    try:
        delivery = d.open_sealed(req.job_id, state.sealed)
    except ValueError as exc:
        log.error("cannot redeliver the webhook of job %s: %s", req.job_id, exc)
        return
    await d.record(delivery, WebhookState(url=delivery.url))
    await enqueue(ctx, delivery)


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Deliver webhooks until `stop` is set: `webhook_prefetch` in flight, one HTTP session."""
    settings = ctx.settings
    try:
        secrets = dispatcher_secrets(settings.webhook_secrets())
    except ValueError as exc:
        raise PermanentError(f"the webhooks handler cannot start: {exc}") from None
    policy = SsrfPolicy(settings.webhook_allowed_networks)
    prefetch = settings.webhook_prefetch
    connector = SsrfConnector(policy, limit=prefetch, limit_per_host=prefetch)
    # No cookie jar: one receiver must never see what another one set.
    # The trace config sends each job's trace on as the `traceparent` header (shared/tracing).
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trace_configs=[client_trace_config()],
    ) as session:
        d = Dispatcher(
            ctx=ctx,
            session=session,
            policy=policy,
            secrets=secrets,
            sealer=Sealer(secrets),
            ladder=Ladder(settings.webhook_retry_delays()),
            states=StateLog(ctx),
        )
        await asyncio.gather(
            consume(
                ctx,
                ctx.topology.webhooks,
                WebhookDelivery,
                functools.partial(handle, d),
                prefetch=prefetch,
                stop=stop,
            ),
            consume(
                ctx,
                ctx.topology.webhooks_redeliver,
                WebhookRedeliver,
                functools.partial(handle_redeliver, d),
                prefetch=4,
                stop=stop,
            ),
            # One batch at a time: a job's states are stored in the order they happened.
            consume(
                ctx,
                ctx.topology.webhook_states,
                WebhookStateBatch,
                write_states,
                prefetch=1,
                stop=stop,
            ),
        )

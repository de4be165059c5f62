"""Consuming a queue: validate each message at the boundary, run its handler, settle it once.

This is the one place that classifies failures:
- a message that fails validation, or whose handler raises PermanentError, can never succeed:
  it is dead-lettered (with an `x-pdfrelay-reason` header when the queue names its dead-letter
  queue), never requeued;
- TransientError: the message waits in the queue's backoff queue (TTL, dead-lettered back) and
  is retried, up to a budget that does not count against the queue's delivery limit, which is
  kept for crashes; a queue without a backoff queue requeues after a short pause;
- anything else is logged with its traceback and requeued, so the delivery limit dead-letters a
  message that keeps failing (poison) and the dead-letter handler ends its job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pydantic import BaseModel, ValidationError

from shared.errors import ErrorCode, PermanentError, TransientError
from shared.obs.logs import job_context
from shared.runtime.context import Context

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
C = TypeVar("C", bound=Context)
Handler = Callable[[M, C, AbstractIncomingMessage], Awaitable[None]]
"""A handler of one message, over the context of its role (an `ExtractContext` for extract)."""
Outcome = Literal["ack", "dead", "retry", "requeue"]

TRANSIENT_BACKOFF_S = 2.0
REASON_HEADER = "x-pdfrelay-reason"
TRANSIENT_HEADER = "x-pdfrelay-transient-attempts"


async def consume(
    ctx: C,
    queue_name: str,
    model: type[M],
    handler: Handler[M, C],
    *,
    prefetch: int,
    stop: asyncio.Event,
    dead_letter: str | None = None,
    backoff: str | None = None,
    max_body_bytes: int | None = None,
) -> None:
    """Consume `queue_name` until `stop` is set, at most `prefetch` messages in flight.

    `dead_letter` names the queue (bound to the dead-letter exchange) that takes messages that
    can never succeed, with the reason in a header; without it they are rejected to the
    queue's own dead-letter exchange. `backoff` names the queue's backoff queue. A message
    larger than `max_body_bytes` is dead-lettered unread.
    """
    channel = await ctx.connection.channel()
    assert isinstance(channel, AbstractRobustChannel)
    in_flight: set[asyncio.Task[None]] = set()
    try:
        await channel.set_qos(prefetch_count=prefetch)
        # Declared (passively), not just named: a robust channel restores only the queues it
        # declared, with their consumers, when the connection comes back after a broker restart.
        queue = await channel.declare_queue(queue_name, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            in_flight.add(task)
            try:
                outcome = await _settle(
                    ctx, message, model, handler, dead_letter, backoff, max_body_bytes
                )
            finally:
                in_flight.discard(task)
            ctx.metrics.messages.labels(queue=queue_name, outcome=outcome).inc()
            if outcome == "dead":
                ctx.metrics.dead_letters.labels(queue=queue_name).inc()

        tag = await queue.consume(on_message)
        await stop.wait()
        # Stop taking new messages, then let the in-flight ones finish.
        await queue.cancel(tag)
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    finally:
        await channel.close()


async def _settle(
    ctx: C,
    message: AbstractIncomingMessage,
    model: type[M],
    handler: Handler[M, C],
    dead_letter: str | None,
    backoff: str | None,
    max_body_bytes: int | None = None,
) -> Outcome:
    """Run the handler and settle the message; returns how it was settled."""
    if max_body_bytes is not None and len(message.body) > max_body_bytes:
        reason = f"{ErrorCode.REQUEST_TOO_LARGE}: the message is larger than {max_body_bytes} bytes"
        await _dead_letter(ctx, message, reason, dead_letter)
        return "dead"
    try:
        msg = model.model_validate_json(message.body)
    except ValidationError as exc:
        reason = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:5]
        )
        await _dead_letter(ctx, message, f"invalid message: {reason}", dead_letter)
        return "dead"
    job_id = getattr(msg, "job_id", None)
    # Every log line about this message names its job.
    with job_context(job_id if isinstance(job_id, str) else None):
        try:
            await handler(msg, ctx, message)
        except PermanentError as exc:
            await _dead_letter(ctx, message, f"{exc.code}: {exc.message}", dead_letter)
            return "dead"
        except TransientError as exc:
            return await _retry_later(ctx, message, exc, dead_letter, backoff)
        except asyncio.CancelledError:
            await message.nack(requeue=True)
            raise
        except Exception:
            log.exception("handler failed on %s; requeueing", message.message_id)
            await message.nack(requeue=True)
            return "requeue"
        await message.ack()
        return "ack"


async def _dead_letter(
    ctx: Context, message: AbstractIncomingMessage, reason: str, dead_letter: str | None
) -> None:
    log.warning("dead-lettering message %s: %s", message.message_id, reason)
    if dead_letter is None:
        await message.reject(requeue=False)
        return
    headers = {**(message.headers or {}), REASON_HEADER: reason[:1000]}
    try:
        await ctx.broker.publish(
            ctx.topology.dead_letters,
            dead_letter,
            message.body,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            headers=headers,
        )
    except TransientError as exc:
        # The copy was not confirmed: the queue's own dead-lettering keeps the message instead.
        log.error("message %s parked without its reason: %s", message.message_id, exc.message)
        await message.reject(requeue=False)
        return
    await message.ack()


async def _retry_later(
    ctx: Context,
    message: AbstractIncomingMessage,
    exc: TransientError,
    dead_letter: str | None,
    backoff: str | None,
) -> Outcome:
    seen = (message.headers or {}).get(TRANSIENT_HEADER)
    attempts = (seen if isinstance(seen, int) else 0) + 1
    if attempts > ctx.settings.transient_retry_budget:
        reason = f"gave up after {attempts - 1} transient failures: {exc.message}"
        await _dead_letter(ctx, message, reason, dead_letter)
        return "dead"
    log.warning("transient failure %d of %s: %s", attempts, message.message_id, exc.message)
    if backoff is not None and await _park(ctx, message, backoff, attempts):
        await message.ack()
        return "retry"
    await asyncio.sleep(TRANSIENT_BACKOFF_S)
    await message.nack(requeue=True)
    return "requeue"


async def _park(
    ctx: Context, message: AbstractIncomingMessage, backoff: str, attempts: int
) -> bool:
    """Copy the message to its backoff queue; False when the broker did not confirm."""
    try:
        await ctx.broker.publish(
            "",
            backoff,
            message.body,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            headers={**(message.headers or {}), TRANSIENT_HEADER: attempts},
        )
    except TransientError as exc:
        log.warning("backoff queue unavailable (%s); requeueing in place", exc.message)
        return False
    return True

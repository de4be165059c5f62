"""Consuming a queue: validate each message at the boundary, run its handler, settle it once.

This is the one place that classifies failures:
- a message that fails validation is rejected without requeue (dead-lettered, never a hot loop);
- TransientError: requeued after a short backoff; the queue's delivery limit bounds the loop;
- anything else is logged with its traceback and requeued, so the delivery limit dead-letters a
  message that keeps failing (poison) and the dead-letter handler ends its job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pydantic import BaseModel, ValidationError

from shared.context import Context
from shared.errors import TransientError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[M, Context, AbstractIncomingMessage], Awaitable[None]]

TRANSIENT_BACKOFF_S = 2.0


async def consume(
    ctx: Context,
    queue_name: str,
    model: type[M],
    handler: Handler[M],
    *,
    prefetch: int,
    stop: asyncio.Event,
) -> None:
    """Consume `queue_name` until `stop` is set, at most `prefetch` messages in flight."""
    channel = await ctx.connection.channel()
    assert isinstance(channel, AbstractRobustChannel)
    in_flight: set[asyncio.Task[None]] = set()
    try:
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            in_flight.add(task)
            try:
                await _settle(ctx, message, model, handler)
            finally:
                in_flight.discard(task)

        tag = await queue.consume(on_message)
        await stop.wait()
        # Stop taking new messages, then let the in-flight ones finish.
        await queue.cancel(tag)
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    finally:
        await channel.close()


async def _settle(
    ctx: Context, message: AbstractIncomingMessage, model: type[M], handler: Handler[M]
) -> None:
    try:
        msg = model.model_validate_json(message.body)
    except ValidationError as exc:
        log.warning("rejecting invalid message %s: %s", message.message_id, exc.errors()[:3])
        await message.reject(requeue=False)
        return
    try:
        await handler(msg, ctx, message)
    except TransientError as exc:
        log.warning("transient failure, requeueing %s: %s", message.message_id, exc.message)
        await asyncio.sleep(TRANSIENT_BACKOFF_S)
        await message.nack(requeue=True)
    except asyncio.CancelledError:
        await message.nack(requeue=True)
        raise
    except Exception:
        log.exception("handler failed on %s; requeueing", message.message_id)
        await message.nack(requeue=True)
    else:
        await message.ack()

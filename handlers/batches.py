"""Batch arbiter: `BatchSignal`s → item-ended markers → one `batch.completed` per batch.

Runs in the ingress process (`infra/app.py` front_doors); its queue has a single active
consumer, so a batch's completion is decided by one consumer at a time, whatever the number of
ingress processes (shared/jobs/batches.py).
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage

from shared.jobs.batches import BatchSignal, on_signal
from shared.runtime.consumer import consume
from shared.runtime.context import Context


async def handle(msg: BatchSignal, ctx: Context, message: AbstractIncomingMessage) -> None:
    await on_signal(ctx, msg)


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Consume `pdfrelay.batches` until `stop` is set."""
    await consume(
        ctx,
        ctx.topology.batches,
        BatchSignal,
        handle,
        prefetch=1,
        stop=stop,
        dead_letter=ctx.topology.batches_dead,
        backoff=ctx.topology.backoff(ctx.topology.batches),
    )

"""Targets handler: an ended job's outputs and manifest written to its result destination.

Runs in the webhooks process (`infra/app.py` outbound), beside the other deliveries to the
outside: no extraction worker slot waits on a destination (shared/jobs/targets.py).
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage

from shared.jobs.targets import TargetWriter, deliver, given_up
from shared.models import DeliveryTask
from shared.runtime.consumer import TRANSIENT_HEADER, consume
from shared.runtime.context import Context

PREFETCH = 8
"""Deliveries in flight per process."""


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Consume `pdfrelay.targets` until `stop` is set."""
    async with TargetWriter(ctx.settings, ctx.storage) as writer:

        async def handle(msg: DeliveryTask, ctx: Context, message: AbstractIncomingMessage) -> None:
            seen = (message.headers or {}).get(TRANSIENT_HEADER)
            await deliver(ctx, writer, msg, seen if isinstance(seen, int) else 0)

        async def dead(msg: DeliveryTask, ctx: Context, message: AbstractIncomingMessage) -> None:
            await given_up(ctx, msg)

        await asyncio.gather(
            consume(
                ctx,
                ctx.topology.targets,
                DeliveryTask,
                handle,
                prefetch=PREFETCH,
                stop=stop,
                dead_letter=ctx.topology.targets_dead,
                backoff=ctx.topology.backoff(ctx.topology.targets),
            ),
            # The crashed ones: their targets end `failed` (an invalid message is dropped).
            consume(ctx, ctx.topology.targets_dead, DeliveryTask, dead, prefetch=1, stop=stop),
        )

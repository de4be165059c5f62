"""LLM handler: page images → the vision model → parts; the merge ends the job once.

Model calls are network-bound and rate-limited: they run here, never in an extraction worker
slot, at most `PDFRELAY_LLM_CONCURRENCY` at once (the consumer's prefetch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractIncomingMessage

from shared.adapters.llm import ModelClient
from shared.jobs import llm, llm_transform
from shared.jobs.cancel import hear as hear_cancels
from shared.models import LlmTask
from shared.runtime.consumer import TRANSIENT_HEADER, consume
from shared.runtime.context import Context

log = logging.getLogger(__name__)


def failures_so_far(message: AbstractIncomingMessage) -> int:
    """The page's failed calls before this delivery (counted by the consumer's backoff)."""
    seen = (message.headers or {}).get(TRANSIENT_HEADER)
    return seen if isinstance(seen, int) else 0


async def handle_merge(task: LlmTask, ctx: Context, message: AbstractIncomingMessage) -> None:
    await llm.handle_merge(ctx, task)


async def handle_dead(task: LlmTask, ctx: Context, message: AbstractIncomingMessage) -> None:
    await llm.handle_dead(ctx, task)


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Consume the page, merge and dead-letter queues until `stop` is set."""
    settings = ctx.settings
    async with contextlib.AsyncExitStack() as stack:
        client: ModelClient | None = None
        if settings.llm_base_url is not None:
            client = await stack.enter_async_context(ModelClient(settings))
        else:
            # Jobs are refused at the doors then; a page that comes anyway fails its job.
            log.info("llm handler: no model endpoint (PDFRELAY_LLM_BASE_URL); llm jobs fail")

        calls = llm.InFlightCalls()

        async def handle_work(
            task: LlmTask, ctx: Context, message: AbstractIncomingMessage
        ) -> None:
            """A page to transcribe, or a template's transformation."""
            step = llm_transform.handle_transform if task.step == "transform" else llm.handle_page
            await step(ctx, client, calls, task, failures_so_far(message))

        topology = ctx.topology
        await asyncio.gather(
            consume(
                ctx,
                topology.llm,
                LlmTask,
                handle_work,
                prefetch=settings.llm_concurrency,
                stop=stop,
                backoff=topology.backoff(topology.llm),
            ),
            consume(
                ctx,
                topology.llm_merge,
                LlmTask,
                handle_merge,
                prefetch=1,
                stop=stop,
                backoff=topology.backoff(topology.llm_merge),
            ),
            consume(ctx, topology.llm_dead, LlmTask, handle_dead, prefetch=4, stop=stop),
            hear_cancels(ctx, stop, calls.cancel),
        )

"""Webhook delivery states on their way to S3: through the broker, in batches, in order.

An attempt's outcome is not written to S3 on the attempt's path. One S3 PUT costs more than
the attempt itself, and an S3 outage must not hold up (or repeat) deliveries. Instead the
webhooks handler hands each state to a `StateLog`, which publishes whatever has gathered as
one confirmed message on `pdfrelay.webhooks.states` (group commit: the next batch forms while
the broker confirms the current one, so there is no added wait), and the attempt's message is
acked only once its state is in that queue. `write_states` takes the batches, one at a time
on the queue's single active consumer, and stores the newest state of each job.

The price: under a burst the state that `GET /v1/jobs/{id}` shows lags behind the deliveries
by the S3 server's write rate. It is never lost, and never goes backwards: a job's next attempt
is only published after its state was confirmed, and batches are written in queue order.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from shared.models import WebhookStateBatch, WebhookStateUpdate
from shared.runtime.context import Context

log = logging.getLogger(__name__)

MAX_BATCH = 500
"""States per message at most (~2.5 KB each)."""

_Waiting = tuple[WebhookStateUpdate, "asyncio.Future[None]"]


class StateLog:
    """Publishes states in batches; `append` returns once the broker has confirmed its batch."""

    def __init__(self, ctx: Context, max_batch: int = MAX_BATCH) -> None:
        self._ctx = ctx
        self._max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, update: WebhookStateUpdate) -> None:
        """Queue `update` and wait until it is in the broker.

        Raises:
            TransientError: The broker did not confirm the batch (nothing of it is stored).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((update, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                await self._ctx.broker.publish(
                    self._ctx.topology.webhooks_exchange,
                    self._ctx.topology.webhook_states,
                    WebhookStateBatch(updates=[update for update, _ in batch]),
                )
            except Exception as exc:  # noqa: BLE001 - not swallowed: each caller raises it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            except BaseException:
                # Cancelled (the process is stopping): so is everyone still waiting.
                for _, done in batch + self._waiting:
                    done.cancel()
                self._waiting.clear()
                raise
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


async def write_states(
    batch: WebhookStateBatch, ctx: Context, message: AbstractIncomingMessage
) -> None:
    """Store the newest state of each job in the batch (the consumer acks after)."""
    newest = {update.job_id: update for update in batch.updates}
    slots = asyncio.Semaphore(ctx.settings.webhook_state_writers)

    async def save(update: WebhookStateUpdate) -> None:
        async with slots:
            await ctx.jobs.save_webhook_state(update.job_id, update.state, update.sealed)

    await asyncio.gather(*(save(update) for update in newest.values()))
    log.debug("stored %d webhook state(s) of %d update(s)", len(newest), len(batch.updates))

"""Target deliveries that gave up, for `pdfrelay dlq … --targets`: list and send again.

Two kinds. A delivery task whose handler crashed on every attempt is parked by the queue's
delivery limit in `pdfrelay.targets.dead`; the targets handler's consumer of that queue settles
its target `failed` (`INTERNAL`), so a task stays parked there only while no targets handler
runs (`list_parked` shows those; `replay` moves them back to `pdfrelay.targets`). Every other
delivery that gave up (a destination down for the whole ladder, a missing bucket, and the parked
ones once settled) is a job whose `target.state` is `failed`: `replay` with its job id puts the
target back to `pending` (`lifecycle.target_reopened`) and queues it again, its retry budget
afresh. Parked messages are taken as the webhooks' parking lot's are (shared/webhooks/dead.py):
basic.get, acked only once their copy is confirmed on the targets queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from shared.adapters.broker import publish
from shared.adapters.topology import Topology
from shared.errors import JobNotFound
from shared.jobs import lifecycle
from shared.models import DeliveryTask
from shared.runtime.context import Context
from shared.settings import Settings
from shared.webhooks.dead import parked_queue, peek_parked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParkedDelivery:
    """One delivery task parked in `pdfrelay.targets.dead`."""

    job_id: str | None
    tenant: str | None
    reason: str
    """`rejected` (its handler failed on every attempt), or `invalid message`."""


def _targets_dead(topo: Topology) -> str:
    return topo.targets_dead


def _task(message: AbstractIncomingMessage) -> DeliveryTask | None:
    try:
        return DeliveryTask.model_validate_json(message.body)
    except ValidationError:
        return None


def _parked(message: AbstractIncomingMessage) -> ParkedDelivery:
    task = _task(message)
    return ParkedDelivery(
        job_id=task.job_id if task else None,
        tenant=task.tenant if task else None,
        reason="rejected" if task else "invalid message",
    )


async def list_parked(settings: Settings, limit: int = 1000) -> list[ParkedDelivery]:
    """The parked delivery tasks, oldest first; the queue is left as it was."""
    return await peek_parked(settings, _targets_dead, _parked, limit)


async def replay(
    ctx: Context,
    *,
    job_id: str | None = None,
    tenant: str = "default",
    replay_all: bool = False,
) -> int:
    """Send target deliveries again: the parked tasks (of `job_id`, or all) back to the targets
    queue; and, for `job_id` (of `tenant`) when none of its was parked, its failed target
    reopened and queued.

    Returns:
        How many deliveries were queued again.

    Raises:
        PermanentError: CONFLICT when the job's target has not failed (or is presigned).
        JobNotFound: no such job of `tenant`, and none of its tasks parked.
    """
    if (job_id is None) == (not replay_all):
        raise ValueError("give exactly one of job_id or replay_all")
    replayed = 0
    async with parked_queue(ctx.settings, _targets_dead) as (topo, connection, queue):
        publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        async with publisher:
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                task = _task(message)
                if task is None or (not replay_all and task.job_id != job_id):
                    continue  # not replayable, or another job's: goes back when the block ends
                await publish(
                    publisher,
                    topo.tasks,
                    topo.DELIVER_KEY,
                    message.body,
                    message_id=f"{task.job_id}.deliver",
                )
                await message.ack()
                replayed += 1
    if job_id is None or replayed:
        return replayed
    try:
        job, rev = await ctx.jobs.get_revision(job_id, tenant)
    except JobNotFound as exc:
        raise JobNotFound(f"no job {job_id!r} of tenant {tenant!r}") from exc
    await lifecycle.target_reopened(ctx, job, rev)
    return 1

"""Cancelling a job: asked for at the ingress, carried out where the job is.

`request_cancel` (ingress) writes a durable cancel marker (`jobs/{id}/cancel.json`), ends a
queued job at once (record, `job.cancelled` event; the webhook follows when the extract handler
meets the job's task, which is where its token travels; the record is written only over the
version read, so a handler that completed the job meanwhile keeps its ending), and tells every
extract process on the fanout exchange `pdfrelay.control`. `listen` (extract process) kills
the worker of a job it is running, or keeps it from starting (`WorkerPool.cancel`), and
remembers the job (`ctx.cancels`). Before it extracts, the extract handler asks that memory;
only when the process may have missed the message (it was not listening yet when the job was
created, or a redelivery) does it read the marker, so a job is cancelled all the same, and a
job this process heard nothing about costs no request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ConfigDict, Field, ValidationError

from shared.errors import ErrorCode, JobCancelled, NotRoutable, PermanentError
from shared.jobs import lifecycle
from shared.jobs.watch import JobWatcher, until_ended
from shared.models import JOB_ID_RE, Frozen, Job, JobStatus
from shared.runtime.context import Context, ExtractContext

log = logging.getLogger(__name__)


class CancelRequest(Frozen):
    """On the control exchange: stop job `job_id` wherever it runs."""

    schema_: Literal["pdfrelay.cancel-request/1"] = Field(
        default="pdfrelay.cancel-request/1", alias="schema"
    )
    job_id: str = Field(pattern=JOB_ID_RE.pattern)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


async def request_cancel(ctx: Context, job: Job) -> Job:
    """Cancel a job that has not ended; returns it as it is now (cancelled when it was queued).

    Raises:
        TransientError: storage or broker away; the cancel may or may not have been recorded.
    """
    await ctx.jobs.request_cancel(job.job_id)
    # After the marker: a handler starting now sees one.
    job, rev = await ctx.jobs.get_revision(job.job_id, job.tenant)
    if job.status is JobStatus.QUEUED:
        # Only over the version read: a handler may hold the task (and the record it carries)
        # and end the job first; then that ending stands (shared/jobs/lifecycle.py).
        job = await lifecycle.cancel_queued(ctx, job, rev)
    try:
        await ctx.broker.publish(ctx.topology.control, "", CancelRequest(job_id=job.job_id))
    except NotRoutable:
        # No extract process is up: none runs the job, and the marker stops it when one comes.
        log.info("job %s: no extract handler to tell about its cancel", job.job_id)
    return job


async def cancel_and_wait(ctx: Context, watcher: JobWatcher, job: Job, wait: float) -> Job:
    """Cancel a job (`DELETE /v1/jobs/{id}`) and give a running one `wait` seconds to stop;
    returns it as it is then (still running: it is being stopped).

    Raises:
        PermanentError: it had ended otherwise than cancelled (CONFLICT).
        TransientError: storage or broker away.
    """
    if not job.status.terminal:
        async with watcher.listen(job.job_id) as events:
            job = await request_cancel(ctx, job)
            if not job.status.terminal:
                job = await until_ended(ctx.jobs, job, events, wait)
    if job.status.terminal and job.status is not JobStatus.CANCELLED:
        raise PermanentError(
            f"the job has already ended ({job.status.value}); it cannot be cancelled",
            ErrorCode.CONFLICT,
        )
    return job


def may_have_missed(ctx: Context, job: Job, redelivered: bool = False) -> bool:
    """True when a cancel of `job` may have been requested without this process hearing it."""
    return redelivered or not ctx.cancels.covers(job.created_at)


async def raise_if_requested(ctx: Context, job: Job, redelivered: bool = False) -> None:
    """Raises JobCancelled when a cancel of `job` has been requested (heard here, or recorded
    by a marker when this process may have missed the message)."""
    if ctx.cancels.heard(job.job_id):
        raise JobCancelled("the job was cancelled")
    if may_have_missed(ctx, job, redelivered) and await ctx.jobs.cancel_requested(job.job_id):
        raise JobCancelled("the job was cancelled")


async def listen(ctx: ExtractContext, stop: asyncio.Event) -> None:
    """Carry out cancel requests for the jobs of this process's worker pool until `stop`."""
    pool = ctx.pool

    def stop_worker(job_id: str) -> None:
        if pool.cancel(job_id):
            log.info("job %s: cancelled, its worker is stopped", job_id)

    await hear(ctx, stop, stop_worker)


async def hear(ctx: Context, stop: asyncio.Event, on_cancel: Callable[[str], None]) -> None:
    """Remember every cancel request (`ctx.cancels`) and pass it to `on_cancel` until `stop`."""
    channel = await ctx.connection.channel()
    # A robust channel re-declares and re-binds its queue after a reconnect; in between,
    # cancels may pass unheard (then the marker is read again).
    channel.close_callbacks.add(lambda *_: ctx.cancels.deaf())
    channel.reopen_callbacks.add(lambda *_: ctx.cancels.listening())
    try:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(ctx.topology.control)

        async def on_message(message: AbstractIncomingMessage) -> None:
            try:
                req = CancelRequest.model_validate_json(message.body)
            except ValidationError:
                log.warning("ignoring an invalid message on the control exchange")
                return
            ctx.cancels.add(req.job_id)
            on_cancel(req.job_id)

        await queue.consume(on_message, no_ack=True)
        ctx.cancels.listening()
        await stop.wait()
    finally:
        ctx.cancels.deaf()
        await channel.close()

"""Every transition of a job, in one place: each one record write of the record the caller
holds (no read-modify-write), its metrics, and one announcement built once (view, event,
webhook, reply, outbox: shared/jobs/outcome.py).

    accept ─► start ─► progress… ─► end (completed | failed | cancelled)
       └──────────────► cancel_queued (ingress)      dead_letter (extract queue gave up)

The extract handler, the fan-out, cancel, the dead-letter drain and the doors
(shared/intake/submit.py) call these; none of them writes a job record itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from shared.errors import ErrorCode
from shared.jobs.outcome import announce_terminal, publish_event
from shared.jobs.records import public_view
from shared.models import (
    Job,
    JobError,
    JobResultSummary,
    JobStatus,
    Progress,
    WebhookSpec,
    utcnow,
)
from shared.runtime.context import Context

log = logging.getLogger(__name__)


async def accept(ctx: Context, job: Job) -> None:
    """Store a new job's record (and its index entry); the door publishes its task next."""
    await ctx.jobs.create(job)


async def announce_accepted(ctx: Context, job: Job) -> None:
    """`job.accepted`, once the task is confirmed; just created: no webhook state to read."""
    ctx.metrics.job_state("accepted", job.door)
    log.info("job %s accepted (door %s)", job.job_id, job.door)
    await publish_event(ctx, job, "job.accepted", public_view(job, None, ctx.settings.base_url))


def started(job: Job, attempts: int) -> Job:
    """The job as it is once a worker slot is its own (not yet stored)."""
    return job.model_copy(
        update={"status": JobStatus.PROCESSING, "started_at": utcnow(), "attempts": attempts}
    )


async def save_progress(ctx: Context, job: Job) -> None:
    """A running job's record with its status and progress (throttled by the caller)."""
    await ctx.jobs.save(job)


def completed(
    job: Job,
    summary: JobResultSummary,
    pages_done: int | None = None,
    result_key: str | None = None,
) -> Job:
    """`result_key`: where the result is stored, when under its cache key (shared/jobs/cache.py)."""
    done = summary.pages_extracted if pages_done is None else pages_done
    return job.model_copy(
        update={
            "result_key": result_key,
            "status": JobStatus.COMPLETED,
            "result": summary,
            "finished_at": utcnow(),
            "progress": Progress(pages_done=done, pages_total=done),
        }
    )


def failed(job: Job, code: str, message: str) -> Job:
    return job.model_copy(
        update={
            "status": JobStatus.FAILED,
            "error": JobError(code=code, message=message),
            "finished_at": utcnow(),
        }
    )


def cancelled(job: Job) -> Job:
    return job.model_copy(update={"status": JobStatus.CANCELLED, "finished_at": utcnow()})


async def end(
    ctx: Context,
    job: Job,
    webhook: WebhookSpec | None,
    *,
    first: bool = True,
    note: str = "",
    stored: Callable[[], Awaitable[None]] | None = None,
) -> Job:
    """Store the job's ending (`job` is terminal), count it, announce it once.

    `first`: no webhook of the job was delivered before (the view skips reading its state).
    `stored`: runs once the ending is stored, before it is announced (clean-up).
    """
    assert job.status.terminal
    await ctx.jobs.save(job)
    if stored is not None:
        await stored()
    code = job.error.code if job.error else None
    ctx.metrics.job_ended(job.status, job.door, code)
    log.info("job %s %s %s%s", job.job_id, job.status.value, code or "", note)
    await announce_terminal(ctx, job, webhook, first=first)
    return job


async def announce_again(ctx: Context, job: Job, webhook: WebhookSpec | None) -> None:
    """A job that has ended already: its announcement again (same event ids), no write."""
    await announce_terminal(ctx, job, webhook)


async def cancel_queued(ctx: Context, job: Job) -> Job:
    """End a job whose record says queued as cancelled (ingress; its webhook token travels
    with the task, so the extract handler announces the webhook when it meets the task)."""
    return await end(ctx, cancelled(job), None, first=False)


async def dead_letter(ctx: Context, job: Job, webhook: WebhookSpec | None) -> None:
    """The extract queue gave up on the job's task (delivery limit): it fails, once."""
    if job.status.terminal:
        await announce_again(ctx, job, webhook)
        return
    log.error("job %s dead-lettered after repeated worker crashes", job.job_id)
    ctx.metrics.dead_letters.labels(queue=ctx.topology.extract).inc()
    await end(
        ctx,
        failed(
            job,
            ErrorCode.EXTRACTION_CRASHED,
            "the document crashed the extraction worker on every attempt",
        ),
        webhook,
        first=False,
    )

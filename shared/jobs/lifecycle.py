"""Every transition of a job, in one place: each one record write of the record the caller
holds (no read-modify-write), its metrics, and one announcement built once (view, event,
webhook, reply, outbox: shared/jobs/outcome.py).

    accept ─► start ─► progress… ─► end (completed | failed | cancelled) ─► target_settled
       └──────────────► cancel_queued (ingress)      dead_letter (extract queue gave up)
                                            target_reopened (an operator) ◄─┘ (failed)

`target_settled`: a job with a result destination (`Job.target`) has its outputs written there
after its end, by the targets handler (shared/jobs/targets.py), and that outcome is stored and
announced (`job.delivered` | `job.delivery_failed`) here, once. `target_reopened`: an operator
sends a failed delivery again (`pdfrelay dlq replay --targets`, shared/jobs/target_dlq.py).

The extract handler, the fan-out, cancel, the dead-letter drain and the doors
(shared/intake/submit.py) call these; none of them writes a job record itself.

A job ends once. Every write after `accept` is conditional on the version of the record its
writer last saw (`Revision`, the record's ETag): the ingress cancelling a queued job and an
extract handler completing it from the record its task carried both write over the version
`accept` stored, and exactly one of them lands. The other reads the record again and stands
back: the handler announces the stored ending again (same event ids) and acks; the ingress
reports it. This costs no request while nobody races (the version comes with the task and
with every read and write); a lost race costs one GET.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from shared.errors import ErrorCode, JobCancelled, PermanentError, WriteConflict
from shared.jobs.outcome import announce_terminal, publish_event, queue_delivery, target_event
from shared.jobs.records import Revision, public_view
from shared.models import (
    Job,
    JobError,
    JobResultSummary,
    JobStatus,
    JobTarget,
    Progress,
    WebhookSpec,
    utcnow,
)
from shared.runtime.context import Context

log = logging.getLogger(__name__)


CONFLICT_TRIES = 4
"""Conditional writes of one transition before it is left to a retry (TransientError): the
record changes under a writer only while another writer of it is at work, which ends."""


async def accept(ctx: Context, job: Job) -> Revision:
    """Store a new job's record (and its index entry); the door publishes its task next, with
    the record's version (`RECORD_ETAG_HEADER`), which the extract handler writes over."""
    return await ctx.jobs.create(job)


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


async def save_progress(ctx: Context, job: Job, rev: Revision) -> None:
    """A running job's record with its status and progress (throttled by the caller), over the
    version `rev` names (then `rev` names the new one).

    Raises:
        JobCancelled: the job has ended meanwhile (a cancel at the ingress while its record
            said queued, or another delivery of its task): nothing is written, and the
            caller's own ending will find the stored one and announce it.
    """
    for _ in range(CONFLICT_TRIES):
        if rev.etag is not None:
            try:
                await ctx.jobs.save(job, rev)
                return
            except WriteConflict:
                pass
        current, fresh = await ctx.jobs.get_revision(job.job_id, job.tenant)
        if current.status.terminal:
            raise JobCancelled(f"the job has ended ({current.status.value})")
        rev.etag = fresh.etag  # someone else's progress: ours is as good
    raise WriteConflict("the job's record kept changing")


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


async def _store_ending(
    ctx: Context, job: Job, rev: Revision | None, only_from: JobStatus | None = None
) -> Job:
    """Store `job`'s ending unless the record holds one already; returns the job as stored.

    That is `job` when its write landed, else the ending found (or, with `only_from`, the job
    found when its record has left that status: nothing written). Without a known version the
    record is read first (a task of an older ingress carries none).
    """
    for _ in range(CONFLICT_TRIES):
        if rev is not None and rev.etag is not None:
            try:
                await ctx.jobs.save(job, rev)
                return job
            except WriteConflict:
                pass
        current, rev = await ctx.jobs.get_revision(job.job_id, job.tenant)
        if current.status.terminal:
            # Equal: our own write landed and only its answer was lost (a retried PUT).
            return job if current == job else current
        if only_from is not None and current.status is not only_from:
            return current
    raise WriteConflict("the job's record kept changing")


async def end(
    ctx: Context,
    job: Job,
    webhook: WebhookSpec | None,
    *,
    rev: Revision | None = None,
    first: bool = True,
    note: str = "",
    stored: Callable[[], Awaitable[None]] | None = None,
) -> Job:
    """Store the job's ending (`job` is terminal), count it, announce it once; returns the
    ending that stands.

    `rev`: the version of the record the caller last saw (None: read it now). When another
    ending was stored since, that one stands and is announced again (same event ids).
    `first`: no webhook of the job was delivered before (the view skips reading its state).
    `stored`: runs once the ending is stored, before it is announced (clean-up).
    """
    assert job.status.terminal
    won = await _store_ending(ctx, job, rev)
    if won is not job:
        log.info(
            "job %s had ended %s already; %s not stored%s",
            job.job_id,
            won.status.value,
            job.status.value,
            note,
        )
        await announce_again(ctx, won, webhook)
        return won
    return await _ended(ctx, job, webhook, first=first, note=note, stored=stored)


async def _ended(
    ctx: Context,
    job: Job,
    webhook: WebhookSpec | None,
    *,
    first: bool,
    note: str = "",
    stored: Callable[[], Awaitable[None]] | None = None,
) -> Job:
    """`job`'s ending was stored just now: clean up, count it, announce it."""
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


async def cancel_queued(ctx: Context, job: Job, rev: Revision) -> Job:
    """End a job whose record said queued (at version `rev`) as cancelled (ingress; its webhook
    token travels with the task, so the extract handler announces the webhook when it meets
    the task). Returns the job as it is: when its record changed meanwhile (a handler started
    or ended it), nothing is written and that is returned; the ending's writer announces it."""
    mine = cancelled(job)
    won = await _store_ending(ctx, mine, rev, only_from=JobStatus.QUEUED)
    if won is not mine:
        return won
    return await _ended(ctx, mine, None, first=False)


async def dead_letter(
    ctx: Context, job: Job, webhook: WebhookSpec | None, rev: Revision | None = None
) -> None:
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
        rev=rev,
        first=False,
    )


async def target_settled(ctx: Context, job: Job, rev: Revision, target: JobTarget) -> Job:
    """Store how the ended job's delivery to its target went (`target` is settled), over the
    version `rev`, and announce it; returns the job as stored. When another delivery of the
    same task settled it first, that outcome stands and is announced again (same event id)."""
    assert target.state != "pending"
    mine = job.model_copy(update={"target": target})
    for _ in range(CONFLICT_TRIES):
        try:
            await ctx.jobs.save(mine, rev)
            break
        except WriteConflict:
            current, rev = await ctx.jobs.get_revision(job.job_id, job.tenant)
            if current.target is None or current.target.state != "pending":
                await announce_target(ctx, current)
                return current
            mine = current.model_copy(update={"target": target})
    else:
        raise WriteConflict("the job's record kept changing")
    log.info("job %s: target %s %s", job.job_id, target.state, target.location or "")
    await announce_target(ctx, mine)
    return mine


async def announce_target(ctx: Context, job: Job) -> None:
    """`job.delivered` or `job.delivery_failed` of a job whose target is settled (repeatable)."""
    assert job.target is not None
    await publish_event(ctx, job, target_event(job.target.state))


async def target_reopened(ctx: Context, job: Job, rev: Revision) -> Job:
    """Put the job's failed target back to `pending` over the version `rev` (one conditional
    write) and queue its delivery again, its retry budget afresh; returns the job as stored.

    Raises:
        PermanentError: CONFLICT when its target has not failed, or is presigned URLs (they are
            dropped from the record once settled: the client submits again).
        WriteConflict: the record changed since `rev` (read it again).
    """
    target = job.target
    if target is None or target.state != "failed":
        state = "no target" if target is None else f"a target {target.state}"
        raise PermanentError(f"the job has {state}, not failed", ErrorCode.CONFLICT)
    if target.kind == "presigned":
        raise PermanentError(
            "a presigned target's URLs are dropped once settled: submit the job again",
            ErrorCode.CONFLICT,
        )
    pending = target.model_copy(
        update={
            "state": "pending",
            "error": None,
            "location": None,
            "objects": None,
            "settled_at": None,
        }
    )
    reopened = job.model_copy(update={"target": pending})
    await ctx.jobs.save(reopened, rev)
    log.info("job %s: its failed target is delivered again", job.job_id)
    await queue_delivery(ctx, reopened)
    return reopened

"""Extract handler: one ExtractTask → run the engine in a worker process → store → announce."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from typing import NamedTuple

from aio_pika.abc import AbstractIncomingMessage

from handlers.console import render
from handlers.console.messages import PreviewRequest
from shared.errors import JobCancelled, PermanentError
from shared.extraction.pool import WorkRequest, extract_limits
from shared.intake.fetch import fetch_source
from shared.jobs import cache, fanout, lifecycle, llm_dispatch
from shared.jobs.cancel import listen as listen_for_cancels
from shared.jobs.cancel import raise_if_requested
from shared.jobs.outcome import ProgressWebhooks
from shared.jobs.progress import ProgressReporter
from shared.jobs.records import RECORD_ETAG_HEADER, Revision
from shared.models import (
    ExtractTask,
    Job,
    JobResultSummary,
    WebhookSpec,
    utcnow,
)
from shared.obs.tracing import job_span
from shared.runtime.consumer import consume
from shared.runtime.context import Context, ExtractContext

log = logging.getLogger(__name__)


class Stored(NamedTuple):
    """An extraction's outcome as stored: its summary and the key of its result document."""

    summary: JobResultSummary
    result_key: str
    source_sha256: str
    """Kept in the record: a redelivery, or a later idempotent retry, need not hash again."""


async def handle(task: ExtractTask, ctx: ExtractContext, message: AbstractIncomingMessage) -> None:
    redelivered = bool(message.redelivered)
    if task.job is not None and task.first is None and not redelivered:
        # The record as accepted travels in the task, its version beside it: no read of it (a
        # redelivery reads it, as do tasks of older versions, which carry none). The ending is
        # written over that version only: a cancel at the ingress meanwhile wins.
        job = task.job
        etag = (message.headers or {}).get(RECORD_ETAG_HEADER)
        rev = Revision(etag if isinstance(etag, str) else None)
    else:
        job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    # The job's trace (from the message, else the record), down to its webhook.
    with job_span("extract", job.job_id, job.traceparent):
        await _handle(task, ctx, job, rev, redelivered)


async def _handle(
    task: ExtractTask,
    ctx: ExtractContext,
    job: Job,
    rev: Revision | None = None,
    redelivered: bool = False,
) -> None:
    if rev is None:
        rev = Revision()
    if task.first is not None:
        await fanout.handle_range(task, ctx, job)
        return
    if job.status.terminal:
        # A redelivery after the outcome was stored: announce it again (same event ids).
        await lifecycle.announce_again(ctx, job, task.webhook)
        return
    attempts = job.attempts + 1

    def started() -> Job:
        # When a worker slot is free, not when the task arrives: with prefetch = workers + 1 a
        # task may wait here (its source already downloaded) and its job is still queued.
        nonlocal job
        job = lifecycle.started(job, attempts)
        return job

    try:
        out = await _extract(ctx, job, rev, started, task.webhook, redelivered)
        if out is None:
            return  # split into page ranges: the merge ends the job
    except JobCancelled:
        job = lifecycle.cancelled(job)
    except PermanentError as exc:
        job = lifecycle.failed(job, str(exc.code), exc.message)
    else:
        job = lifecycle.completed(
            job.model_copy(update={"source_sha256": out.source_sha256}),
            out.summary,
            result_key=out.result_key,
        )
    if job.attempts < attempts:  # ended before a worker slot (cache hit, fetch failure)
        job = job.model_copy(
            update={"started_at": job.started_at or utcnow(), "attempts": attempts}
        )
    # Over the version last seen: if the ingress ended the job as cancelled while its record
    # still said queued (this task waited for a worker slot, a cache hit, or a short job whose
    # record is written only at its end), that first ending stands and is announced again.
    await lifecycle.end(ctx, job, task.webhook, rev=rev, first=not redelivered)


async def _extract(
    ctx: ExtractContext,
    job: Job,
    rev: Revision,
    started: Callable[[], Job],
    webhook: WebhookSpec | None = None,
    redelivered: bool = False,
) -> Stored | None:
    """The job's stored result; None when it was split into page ranges (shared/jobs/fanout.py)
    or its pages went to the vision model (shared/jobs/llm_dispatch.py)."""
    settings = ctx.settings
    with (
        tempfile.TemporaryDirectory(prefix="pdfrelay-", dir=settings.spool_dir) as tmp,
        ctx.pool.track(job.job_id),  # from here on a cancel request reaches the job
    ):
        pdf_path = f"{tmp}/source.pdf"
        found = await cache.lookup(ctx, job, lambda: fetch_source(ctx, job, pdf_path), pdf_path)
        if found.hit is not None:
            return Stored(found.hit, cache.entry_key(found.key, job.job_id), found.sha256)
        await raise_if_requested(ctx, job, redelivered)
        # Progress webhooks asked for: progress from the start; else after progress_after_s.
        after_s = 0.0 if webhook is not None and webhook.progress else settings.progress_after_s
        progress = ProgressReporter(ctx, job, rev, ProgressWebhooks(ctx, webhook), after_s)

        async def on_slot() -> None:
            progress.start(started())

        try:
            with ctx.metrics.extraction_seconds.time():
                out = await ctx.pool.run(
                    WorkRequest(
                        pdf_path=pdf_path,
                        out_dir=tmp,
                        options=job.options,
                        limits=extract_limits(settings),
                        split_above=fanout.split_above(settings, job),
                        split_min_cpu_s=settings.fanout_min_cpu_s,
                    ),
                    progress.update,
                    job_id=job.job_id,
                    on_slot=on_slot,
                )
        finally:
            # Before the job's ending is written: no progress write may land after it.
            await progress.flush()
        if out.split:
            # The planner stores it processing (started at on_slot), with its page total.
            await fanout.plan(ctx, progress.job, rev, webhook, pdf_path, out.page_count)
            return None
        ctx.metrics.job_pages.observe(out.pages_extracted)
        if llm_dispatch.wants_model(job):
            # The pages go to the vision model: the llm handler's merge ends the job.
            await llm_dispatch.dispatch(
                ctx,
                progress.job.model_copy(update={"source_sha256": found.sha256}),
                rev,
                webhook,
                result_path=out.result_path,
                artifacts=out.artifacts,
                digests=out.digests,
                page_count=out.page_count,
                pages_extracted=out.pages_extracted,
                warnings=out.warnings,
            )
            return None
        summary, key = await cache.store_result(ctx, job, out, found.key)
        return Stored(summary, key, found.sha256)


async def handle_dead(
    task: ExtractTask, ctx: ExtractContext, message: AbstractIncomingMessage
) -> None:
    """A task the extract queue gave up on (delivery limit): its job fails, and everyone hears."""
    job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    await lifecycle.dead_letter(ctx, job, task.webhook, rev)


async def handle_merge(
    task: ExtractTask, ctx: ExtractContext, message: AbstractIncomingMessage
) -> None:
    job = await ctx.jobs.get(task.job_id, task.tenant)
    with job_span("merge", job.job_id, job.traceparent):
        await fanout.handle_merge(task, ctx)


async def serve(context: Context, stop: asyncio.Event) -> None:
    """Run the extract and dead-letter consumers and the cancel listener until `stop` is set."""
    ctx = context.for_extraction()
    await asyncio.gather(
        consume(
            ctx,
            ctx.topology.extract,
            ExtractTask,
            handle,
            # One task more than there are workers: the next document downloads while the
            # workers are busy (the pool's semaphore still runs at most `workers` at once).
            prefetch=ctx.settings.extract_workers + 1,
            stop=stop,
            backoff=ctx.topology.backoff(ctx.topology.extract),
        ),
        # Ranges of large documents may take every worker (and one more downloads ahead), but a
        # whole job waiting for a worker gets the next free one before any range does, so a
        # small job waits for one range at most (README "Fan-out").
        consume(
            ctx,
            ctx.topology.extract_ranges,
            ExtractTask,
            handle,
            prefetch=ctx.settings.extract_workers + 1,
            stop=stop,
            backoff=ctx.topology.backoff(ctx.topology.extract_ranges),
        ),
        consume(
            ctx,
            ctx.topology.extract_merge,
            ExtractTask,
            handle_merge,
            prefetch=1,
            stop=stop,
            backoff=ctx.topology.backoff(ctx.topology.extract_merge),
        ),
        consume(ctx, ctx.topology.extract_dead, ExtractTask, handle_dead, prefetch=4, stop=stop),
        # The console's page previews (handlers/console/render.py), in the same worker pool.
        consume(ctx, ctx.topology.previews, PreviewRequest, render.handle, prefetch=2, stop=stop),
        listen_for_cancels(ctx, stop),
    )

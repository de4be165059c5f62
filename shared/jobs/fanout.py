"""Page-range fan-out, the running part: a large document is split into range tasks, each
extracted by any worker, and the parts are merged in page order into one result by a
single-active-consumer queue (the planning and merging themselves: shared/extraction/fanout.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from shared.errors import ErrorCode, JobCancelled, PermanentError
from shared.extraction.engine import MARKDOWN_STATE
from shared.extraction.fanout import (
    EMPTY_PART_RESULT,
    FANOUT_OUTPUTS,
    RangePart,
    builder_states,
    merge_parts,
    parse_parts,
    part_key,
    parts_prefix,
    ranges,
    read_part,
)
from shared.extraction.layout import (
    MARKDOWN_ARTIFACT,
    MARKDOWN_TYPE,
    LayoutFile,
    merged_outputs,
)
from shared.extraction.pool import WorkRequest, extract_limits
from shared.jobs import lifecycle
from shared.jobs.cancel import raise_if_requested
from shared.jobs.outcome import publish_event
from shared.jobs.records import Revision, artifact_key, result_key, upload_key
from shared.models import (
    Artifact,
    ExtractOptions,
    ExtractTask,
    Job,
    JobResultSummary,
    Progress,
    WebhookSpec,
)
from shared.runtime.context import Context, ExtractContext
from shared.settings import Settings

log = logging.getLogger(__name__)


class _Source:
    """One local copy of a document's PDF, shared by the ranges this process extracts."""

    def __init__(self, tmp: str, ready: Callable[[str], Awaitable[None]]) -> None:
        self.tmp = tmp
        self.path = f"{tmp}/source.pdf"
        self.holders = 0
        self.ready: asyncio.Task[None] = asyncio.ensure_future(ready(self.path))


_SOURCES: dict[tuple[str | None, str], _Source] = {}
"""This process's downloaded sources of fanned-out documents, by (bucket, key)."""


@contextlib.asynccontextmanager
async def shared_source(ctx: Context, key: str, bucket: str | None) -> AsyncIterator[str]:
    """The path of `key`'s local copy: downloaded once however many of its ranges this
    process extracts at the same time, deleted when the last of them is done."""
    ident = (bucket, key)
    source = _SOURCES.get(ident)
    if source is None:
        tmp = tempfile.mkdtemp(prefix="pdfrelay-", dir=ctx.settings.spool_dir)
        source = _SOURCES[ident] = _Source(
            tmp, lambda path: ctx.storage.download(key, path, bucket=bucket)
        )
    source.holders += 1
    try:
        await asyncio.shield(source.ready)
        yield source.path
    finally:
        source.holders -= 1
        if source.holders == 0:
            if _SOURCES.get(ident) is source:
                del _SOURCES[ident]
            if not source.ready.done():
                source.ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(source.ready, return_exceptions=True)
            await asyncio.to_thread(shutil.rmtree, source.tmp, True)


def split_above(settings: Settings, job: Job) -> int | None:
    """The page count above which the worker is to answer with the count instead of a result
    (`WorkRequest.split_above`); None for a job that is never split.

    Only whole-document jobs (no `pages` selection) whose outputs a merge can rebuild are split.
    """
    if job.options.pages is not None or not set(job.options.outputs) <= FANOUT_OUTPUTS:
        return None
    if job.options.template is not None:
        return None  # the template's step follows one whole extraction (shared/jobs/llm.py)
    return settings.fanout_min_pages


async def plan(
    ctx: Context,
    job: Job,
    rev: Revision,
    webhook: WebhookSpec | None,
    pdf_path: str,
    pages: int,
) -> None:
    """Publish the range tasks of a document of `pages` pages (counted by the worker that
    opened it, shared/extraction/pool.py)."""
    settings = ctx.settings
    if job.source_url is not None:
        # The ranges read the stored copy; none of them fetches the URL again.
        await ctx.storage.put_file(upload_key(job.job_id), pdf_path, "application/pdf")
    job = job.model_copy(update={"progress": Progress(pages_done=0, pages_total=pages)})
    await lifecycle.save_progress(ctx, job, rev)
    spans = ranges(pages, settings.fanout_range_pages)
    log.info("job %s: %d pages in %d ranges", job.job_id, pages, len(spans))
    for first, last in spans:
        task = ExtractTask(
            job_id=job.job_id,
            tenant=job.tenant,
            webhook=webhook,
            first=first,
            last=last,
            parts=len(spans),
        )
        await _publish_task(ctx, ctx.topology.RANGE_KEY, task, f"{job.job_id}.{first}-{last}")


async def _publish_task(ctx: Context, key: str, task: ExtractTask, message_id: str) -> None:
    """A range or merge task on the tasks exchange (confirmed; `message_id` makes it unique)."""
    await ctx.broker.publish(ctx.topology.tasks, key, task, message_id=message_id)


async def handle_range(task: ExtractTask, ctx: ExtractContext, job: Job) -> None:
    """Extract one range into its part; publish the merge when every part is there."""
    assert task.first is not None
    assert task.last is not None
    assert task.parts is not None
    if job.status.terminal:
        return  # cancelled, or failed by another range: the rest of the ranges are skipped
    try:
        part = await _extract_range(ctx, job, task.first, task.last)
    except JobCancelled:
        await _end(ctx, task, lifecycle.cancelled)
        return
    except PermanentError as exc:
        if exc.code is ErrorCode.INVALID_OPTIONS and task.first > 1:
            # Past the end of the file read now (planned by an older version from an estimate
            # of the page count, or the source object replaced since): an empty part.
            part = RangePart(
                first=task.first, last=task.last, pages_processed=0, result=EMPTY_PART_RESULT
            )
        else:
            await _fail(ctx, task, exc)
            return
    await _store_part(ctx, job, task, part)


async def _fail(ctx: Context, task: ExtractTask, exc: PermanentError) -> None:
    await _end(ctx, task, lambda j: lifecycle.failed(j, str(exc.code), exc.message))


async def _store_part(ctx: Context, job: Job, task: ExtractTask, part: RangePart) -> None:
    """Store the part; publish the merge when every part is there."""
    assert task.first is not None
    assert task.last is not None
    assert task.parts is not None
    await ctx.storage.put_bytes(
        part_key(job.job_id, task.first, task.last), part.model_dump_json(by_alias=True).encode()
    )
    done = await ctx.storage.list_keys(parts_prefix(job.job_id))
    await _report_progress(ctx, job, done)
    if len(done) >= task.parts:
        # Two last ranges may both get here: the merge queue's single consumer and its terminal
        # check make the second merge task a no-op.
        merge = ExtractTask(
            job_id=job.job_id, tenant=job.tenant, webhook=task.webhook, parts=task.parts
        )
        await _publish_task(ctx, ctx.topology.MERGE_KEY, merge, f"{job.job_id}.merge")


async def _report_progress(ctx: Context, job: Job, part_keys: list[str]) -> None:
    """A job.progress event counting the pages of the parts done; the record is not rewritten
    (ranges racing the merge's terminal save could set it back to processing)."""
    done = 0
    for key in part_keys:
        first, _, last = key.rsplit("/", 1)[-1].removesuffix(".json").partition("-")
        done += int(last) - int(first) + 1
    total = job.progress.pages_total
    progress = Progress(pages_done=min(done, total) if total else done, pages_total=total)
    await publish_event(ctx, job.model_copy(update={"progress": progress}), "job.progress")


async def _extract_range(ctx: ExtractContext, job: Job, first: int, last: int) -> RangePart:
    settings = ctx.settings
    key, bucket = (
        (upload_key(job.job_id), None)
        if job.source_url is not None
        else (job.source_key, job.source_bucket)
    )
    assert key is not None
    # The last range is open-ended: the file read now may have more pages than was planned.
    total = job.progress.pages_total
    pages = f"{first}-" if total is not None and last >= total else f"{first}-{last}"
    options = job.options.model_copy(update={"pages": pages})
    with (
        tempfile.TemporaryDirectory(prefix="pdfrelay-", dir=settings.spool_dir) as tmp,
        ctx.pool.track(job.job_id),
    ):
        async with shared_source(ctx, key, bucket) as pdf_path:
            return await _run_range(ctx, job, first, last, options, pdf_path, tmp)


async def _run_range(
    ctx: ExtractContext,
    job: Job,
    first: int,
    last: int,
    options: ExtractOptions,
    pdf_path: str,
    tmp: str,
) -> RangePart:
    settings = ctx.settings
    await raise_if_requested(ctx, job)
    out = await ctx.pool.run(
        WorkRequest(
            pdf_path=pdf_path,
            out_dir=tmp,
            options=options,
            # Every range opens the whole document, whose streams the worker that planned the
            # ranges inflated and counted already (a bomb failed the job there, unsplit).
            limits=replace(extract_limits(settings, range_part=True), max_inflated_bytes=None),
        ),
        lambda done, total: None,
        job_id=job.job_id,
        background=True,  # whole jobs waiting for a worker go first
    )
    state = next((a.path for a in out.artifacts if a.name == MARKDOWN_STATE), None)
    # Reading and parsing the part in a thread: not on the event loop.
    return await asyncio.to_thread(
        read_part, first, last, out.pages_extracted, out.result_path, state
    )


async def _end(ctx: Context, task: ExtractTask, outcome: Callable[[Job], Job]) -> None:
    """End the job with `outcome` unless it has ended already (then only announce it)."""
    job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    if job.status.terminal:
        await lifecycle.announce_again(ctx, job, task.webhook)
        return
    note = f" (range {task.first}-{task.last})"
    await lifecycle.end(ctx, outcome(job), task.webhook, rev=rev, first=False, note=note)


async def handle_merge(task: ExtractTask, ctx: Context) -> None:
    """Merge a job's parts into its result and complete it; a repeated merge only announces."""
    job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    if job.status.terminal:
        await lifecycle.announce_again(ctx, job, task.webhook)
        return
    keys = sorted(await ctx.storage.list_keys(parts_prefix(job.job_id)))
    raws = [await ctx.storage.get_bytes(k) for k in keys]
    # CPU work, all of it off the event loop: parsing the parts, rendering (by the same pure
    # function as a one-pass run), merging and dumping.
    parts = await asyncio.to_thread(parse_parts, raws)
    states = builder_states(parts)
    layout = await asyncio.to_thread(merged_outputs, states, job.options) if states else None
    result = await asyncio.to_thread(merge_parts, parts, layout)
    files = layout.files if layout else []
    if layout is None and result.markdown is not None:
        files = [LayoutFile(MARKDOWN_ARTIFACT, result.markdown.encode(), MARKDOWN_TYPE)]
    if "markdown" not in job.options.outputs:
        result.markdown = None  # only document.md, which the blocks/chunks spans point into
        result.markdown_pages = None
    dumped = await asyncio.to_thread(result.model_dump_json, by_alias=True)
    await ctx.storage.put_bytes(result_key(job.job_id), dumped.encode(), "application/json")
    artifacts: list[Artifact] = []
    for file in files:
        data = file.data
        await ctx.storage.put_bytes(artifact_key(job.job_id, file.name), data, file.content_type)
        artifacts.append(
            Artifact(
                name=file.name,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                content_type=file.content_type,
            )
        )
    processed = sum(p.pages_processed for p in parts)
    summary = JobResultSummary(
        page_count=result.page_count,
        pages_extracted=processed,
        artifacts=tuple(artifacts),
        warnings=tuple(result.warnings),
    )

    async def drop_parts() -> None:
        for key in keys:  # a repeated merge stops at the terminal check: they are done with
            await ctx.storage.delete(key)

    job = lifecycle.completed(job, summary, processed)
    note = f" from {len(parts)} ranges"
    # Over the version read: a cancel meanwhile stands (the parts stay for the sweeper then).
    await lifecycle.end(ctx, job, task.webhook, rev=rev, first=False, note=note, stored=drop_parts)

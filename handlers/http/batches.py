"""The /v1 batch views: submit many PDFs at once, follow the batch, cancel what has not ended."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from handlers import jobs_api
from handlers.http.batch_sources import read_json_batch
from handlers.http.bodies import read_batch_form
from handlers.http.common import CTX, SUBMITTER, options, tenant_of, webhook_spec
from handlers.jobs_api import API
from shared.api.sse import batch_completed, batch_stream, sse
from shared.errors import ErrorCode, JobNotFound, PermanentError
from shared.intake import limits
from shared.intake.batch import BatchFile, BatchRefused, submit_batch
from shared.intake.targets import resolve_target
from shared.jobs import batches
from shared.jobs.batches import Batch, BatchItem
from shared.jobs.cancel import request_cancel
from shared.jobs.throughput import QUEUE_PROBE_TTL_S, batch_eta
from shared.jobs.watch import JobEvents
from shared.models import Job, JobError, Progress, WebhookState, utcnow
from shared.runtime.context import Context

log = logging.getLogger(__name__)

DEFAULT_ITEMS = 100
MAX_ITEMS_PAGE = 1000
READS_AT_ONCE = 16
LIVE_READS = 64
"""Records of items not ended read for a batch's pages done: the running ones (items are queued
in order, the extract queue is first in, first out); the later ones, still queued, have no page
count yet."""


async def create_batch(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    if request.content_type == "application/json":
        spec = await read_json_batch(request, tenant)
        if all(f.refused for f in spec.files):
            return _refused(spec.files)
        try:
            batch = await submit_batch(
                ctx,
                request.app[SUBMITTER],
                tenant=tenant,
                options=spec.options,
                files=spec.files,
                webhook_url=spec.webhook.url if spec.webhook else None,
                target=spec.target,
                webhook_token=spec.webhook.token if spec.webhook else None,
            )
        except BatchRefused as exc:
            return _refusal(list(exc.items))
        return await _accepted(ctx, batch)
    if request.content_type != "multipart/form-data":
        raise PermanentError(
            "send multipart/form-data with one 'file' part per PDF, or application/json with "
            "'items' (sources) or a 'prefix'",
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
    form = await read_batch_form(request, ctx)
    try:
        fields = form.fields
        if not form.files:
            raise PermanentError("the form has no 'file' part", ErrorCode.INVALID_REQUEST)
        opts = options(fields.get("options"))
        hook = await webhook_spec(
            ctx.settings, fields.get("webhook_url"), fields.get("webhook_token")
        )
        target = await resolve_target(ctx.settings, tenant, fields.get("target"))
        refs = _client_refs(fields.get("client_refs"), len(form.files))
        files = [
            BatchFile(name, ref, spooled)
            for (name, spooled), ref in zip(form.files, refs, strict=True)
        ]
        for f in files:
            limits.check_length("a file name", f.filename, limits.MAX_FILENAME_CHARS)
        if all(f.refused for f in files):
            return _refused(files)
        try:
            batch = await submit_batch(
                ctx,
                request.app[SUBMITTER],
                tenant=tenant,
                options=opts,
                files=files,
                webhook_url=hook.url if hook else None,
                target=target,
                webhook_token=hook.token if hook else None,
            )
        except BatchRefused as exc:
            return _refusal(list(exc.items))
    finally:
        form.discard()
    return await _accepted(ctx, batch)


async def _accepted(ctx: Context, batch: Batch) -> web.Response:
    # Every item in the answer, however many: the refusals above all.
    view = await batch_view(ctx, batch, 0, len(batch.items), fresh=True)
    headers = {"Location": f"/v1/batches/{batch.batch_id}"}
    return web.json_response(view, status=202, headers=headers)


def _client_refs(raw: str | None, n: int) -> list[str | None]:
    if raw is None or not raw.strip():
        return [None] * n
    refs = limits.loads(raw, "client_refs", ErrorCode.INVALID_REQUEST)
    if not isinstance(refs, list) or len(refs) != n:
        raise PermanentError(
            f"client_refs must be a JSON array of {n} entries, one per file",
            ErrorCode.INVALID_REQUEST,
        )
    out: list[str | None] = []
    for ref in refs:
        if ref is not None and not isinstance(ref, str | int):
            raise PermanentError("each client_ref must be a string", ErrorCode.INVALID_REQUEST)
        text = None if ref is None else str(ref)
        limits.check_length("client_ref", text, limits.MAX_CLIENT_REF_CHARS)
        out.append(text)
    return out


def _refused(files: list[BatchFile]) -> web.Response:
    return _refusal(
        [
            BatchItem(index=i, filename=f.filename, client_ref=f.client_ref, refused=_error(f))
            for i, f in enumerate(files)
            if f.refused
        ]
    )


def _error(f: BatchFile) -> JobError | None:
    return JobError(code=str(f.refused.code), message=f.refused.message) if f.refused else None


def _refusal(refused: list[BatchItem]) -> web.Response:
    items = [_item_view(it, None) for it in refused]
    error = {
        "code": str(ErrorCode.BATCH_REFUSED),
        "message": f"every item of the batch was refused ({len(items)}); nothing was queued",
        "items": items,
    }
    return web.json_response({"error": error}, status=422)


async def get_batch(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    batch = await batches.load(ctx, request.match_info["batch_id"], tenant_of(request))
    start, limit = _page(request)
    view = await batch_view(ctx, batch, start, limit)
    return web.json_response({**view, "eta_s": await _eta(request, batch, view["counts"])})


async def _eta(request: web.Request, batch: Batch, counts: dict[str, int]) -> float | None:
    """The batch's ETA (shared/jobs/throughput.py `batch_eta`; rough, and said so)."""
    api = request.app.get(API)
    if api is None or counts["pending"] == 0:
        return None
    ctx = api.ctx
    depth = await ctx.metrics.queue_depth(ctx.topology.extract, QUEUE_PROBE_TTL_S)
    parallel = (depth[1] if depth is not None else 0) * ctx.settings.extract_workers
    ended = counts["accepted"] - counts["pending"]
    return batch_eta(batch.created_at, utcnow(), ended, counts["pending"], api.meter, parallel)


async def batch_events(request: web.Request) -> web.StreamResponse:
    """The batch now (`batch.state`: counts and pages, no items), then its items' events as
    they happen, then `batch.completed`; then EOF. A batch that has completed gets only its
    `batch.completed`. Kept as a job's stream is (handlers/jobs_api.py `job_events`): a
    keep-alive when quiet, ended at shutdown, and its backlog bounded."""
    api = request.app[API]
    ctx = api.ctx
    batch = await batches.load(ctx, request.match_info["batch_id"], tenant_of(request))

    async def start(events: JobEvents) -> AsyncGenerator[bytes, None]:
        # After subscribing: no change falls between (the record leaves `accepting` too).
        now = await batches.load(ctx, batch.batch_id, batch.tenant)
        completed = await batch_completed(ctx, now)
        if completed is not None:
            return batch_stream(ctx, now, completed, events)
        state = await batch_view(ctx, now, 0, 0)
        del state["items"], state["next_cursor"]  # the state only: items are paged
        return batch_stream(ctx, now, sse("batch.state", state), events)

    return await jobs_api.stream_events(
        request, api.watcher.listen_batch(batch.batch_id), start, f"batch {batch.batch_id}"
    )


async def cancel_batch(request: web.Request) -> web.Response:
    """Cancel every item that has not ended; the batch as it is then."""
    ctx = request.app[CTX]
    batch = await batches.load(ctx, request.match_info["batch_id"], tenant_of(request))
    slots = asyncio.Semaphore(READS_AT_ONCE)

    async def cancel(job_id: str) -> None:
        async with slots:
            try:
                job = await ctx.jobs.get(job_id, batch.tenant)
            except JobNotFound:
                return
            if not job.status.terminal:
                await request_cancel(ctx, job)

    await asyncio.gather(*(cancel(job_id) for job_id in sorted(batch.accepted)))
    return web.json_response(await batch_view(ctx, batch, 0, DEFAULT_ITEMS))


def _page(request: web.Request) -> tuple[int, int]:
    try:
        start = int(request.query.get("cursor") or 0)
        limit = int(request.query.get("limit") or DEFAULT_ITEMS)
    except ValueError as exc:
        raise PermanentError("cursor and limit must be numbers", ErrorCode.INVALID_REQUEST) from exc
    if start < 0 or not 1 <= limit <= MAX_ITEMS_PAGE:
        raise PermanentError(
            f"cursor must be >= 0 and limit 1-{MAX_ITEMS_PAGE}", ErrorCode.INVALID_REQUEST
        )
    return start, limit


async def batch_view(
    ctx: Context, batch: Batch, start: int, limit: int, *, fresh: bool = False
) -> dict[str, Any]:
    """Counts, pages, and the items `start`…`start + limit`; `fresh`: just queued (no job is
    read). The records read are the page's items' and, for the pages done, the first
    `LIVE_READS` items not ended (in the order they were queued: those running now)."""
    ends = {} if fresh else await batches.ended(ctx, batch.batch_id)
    done = None if fresh else await batches.completion(ctx, batch.batch_id)
    page = batch.items[start : start + limit]
    jobs: dict[str, Job] = {}
    if not fresh:
        accepted = batch.accepted
        running = [
            it.job_id
            for it in batch.items
            if it.job_id is not None and it.job_id in accepted and it.job_id not in ends
        ][:LIVE_READS]
        wanted = {*running, *(it.job_id for it in page if it.job_id is not None)}
        jobs = await _read_jobs(ctx, batch.tenant, wanted)
    live = {job_id: _progress(job) for job_id, job in jobs.items()}
    view = batches.summary(batch, ends, done, ctx.settings.base_url, live)
    view["items"] = [_item_view(it, jobs.get(it.job_id or "")) for it in page]
    view["next_cursor"] = str(start + limit) if start + limit < len(batch.items) else None
    view["webhook"] = None
    if batch.webhook_url is not None:
        state = None if fresh else await ctx.jobs.webhook_state(batch.batch_id)
        view["webhook"] = (state or WebhookState(url=batch.webhook_url)).model_dump(mode="json")
    return view


def _progress(job: Job) -> Progress:
    """A read item's progress; one that has ended (its marker not written yet) is done."""
    if not job.status.terminal:
        return job.progress
    pages = batches.item_pages(job.progress)
    return Progress(pages_done=pages, pages_total=pages)


async def _read_jobs(ctx: Context, tenant: str, job_ids: set[str]) -> dict[str, Job]:
    slots = asyncio.Semaphore(READS_AT_ONCE)

    async def read(job_id: str) -> Job | None:
        async with slots:
            try:
                return await ctx.jobs.get(job_id, tenant)
            except JobNotFound:
                return None

    found = await asyncio.gather(*(read(job_id) for job_id in sorted(job_ids)))
    return {job.job_id: job for job in found if job is not None}


def _item_view(item: BatchItem, job: Job | None) -> dict[str, Any]:
    error = item.refused or (job.error if job else None)
    status = "refused" if item.refused else (job.status.value if job else "queued")
    return {
        "index": item.index,
        "filename": item.filename,
        "client_ref": item.client_ref,
        "job_id": item.job_id,
        "status": status,
        "error": json.loads(error.model_dump_json()) if error else None,
    }

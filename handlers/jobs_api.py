"""Job control over HTTP: list, cancel, follow (Server-Sent Events), status estimates, retention.

Its event streams (a job's here, a batch's in handlers/http/batches.py) are ended at shutdown.

Its state is set up on the ingress application by `setup` (called from `ingress.create_app`);
its routes are in the table (handlers/http/routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web

from handlers.http.common import tenant_of
from shared.api.queries import list_query
from shared.api.sse import MAX_FOLLOWED, SHUTDOWN, follow_tenant, job_stream
from shared.errors import ErrorCode, PermanentError, QuotaExceeded, TransientError
from shared.jobs import retention
from shared.jobs.cancel import cancel_and_wait
from shared.jobs.listing import EndedRecords, InvalidCursor, list_jobs
from shared.jobs.quota import retry_after_s
from shared.jobs.throughput import ThroughputMeter, estimate_now
from shared.jobs.watch import JobEvents, JobWatcher
from shared.models import Job
from shared.runtime.context import Context

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 10.0
"""DELETE waits this long for a running job's worker to be stopped, then answers 202."""


@dataclass
class JobsApi:
    ctx: Context
    watcher: JobWatcher
    meter: ThroughputMeter = field(default_factory=ThroughputMeter)
    ended: EndedRecords = field(default_factory=EndedRecords)
    """Ended jobs' records the lists have read (never written again: no GET for them next time)."""
    streams: set[JobEvents] = field(default_factory=set)
    """The event queues of open SSE streams, ended at shutdown."""


API = web.AppKey("jobs_api", JobsApi)


def setup(
    app: web.Application,
    ctx: Context,
    watcher: JobWatcher,
) -> None:
    """Add the job-control state, the throughput meter and the retention sweeper to `app` (the
    routes come from the table, handlers/http/routes.py)."""
    api = JobsApi(ctx=ctx, watcher=watcher)
    app[API] = api
    watcher.observers.append(api.meter.on_event)
    app.on_shutdown.append(_end_streams)
    if ctx.settings.retention_days > 0:
        app.cleanup_ctx.append(_sweeper)


async def get_jobs(request: web.Request) -> web.Response:
    """A page of the tenant's jobs, newest first (`status`, `door`, `client_ref`,
    `created_after`, `limit`, `cursor`)."""
    api = request.app[API]
    ctx = api.ctx
    query = list_query(request.query)
    try:
        page = await list_jobs(
            ctx.jobs, tenant_of(request), query.filter, query.limit, query.cursor, ended=api.ended
        )
    except InvalidCursor as exc:
        raise PermanentError(str(exc), ErrorCode.INVALID_REQUEST) from exc
    views = await asyncio.gather(*(ctx.jobs.view(j, ctx.settings.base_url) for j in page.jobs))
    return web.json_response({"jobs": views, "next_cursor": page.next_cursor})


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job: 200 cancelled, 202 still stopping, 409 it had ended."""
    api = request.app[API]
    ctx = api.ctx
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    job = await cancel_and_wait(ctx, api.watcher, job, CANCEL_WAIT_S)
    view = await ctx.jobs.view(job, ctx.settings.base_url)
    return web.json_response(view, status=200 if job.status.terminal else 202)


async def job_events(request: web.Request) -> web.StreamResponse:
    """The job now (`job.state`), then `job.progress` events and the terminal event; then EOF.

    A job that has already ended gets only its terminal event."""
    ctx = request.app[API].ctx
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))

    async def start(events: JobEvents) -> AsyncGenerator[bytes, None]:
        now = await ctx.jobs.get(job.job_id, job.tenant)
        return job_stream(ctx, now, await ctx.jobs.view(now, ctx.settings.base_url), events)

    return await stream_events(
        request, request.app[API].watcher.listen(job.job_id), start, job.job_id
    )


async def tenant_events(request: web.Request) -> web.StreamResponse:
    """One stream for many jobs: the states of the jobs in `jobs` (comma-separated ids), then
    every job event of the tenant until the client goes (a console follows all its cards over
    it; a browser has only ~6 connections per host)."""
    api = request.app[API]
    ids = [i for i in request.query.get("jobs", "").split(",") if i]
    if len(ids) > MAX_FOLLOWED:
        raise PermanentError(
            f"jobs may name at most {MAX_FOLLOWED} jobs", ErrorCode.INVALID_REQUEST
        )
    tenant = tenant_of(request)

    async def start(events: JobEvents) -> AsyncGenerator[bytes, None]:
        return follow_tenant(api.ctx, tenant, list(dict.fromkeys(ids)), events)

    return await stream_events(
        request, api.watcher.listen_tenant(tenant), start, f"tenant {tenant}"
    )


async def stream_events(
    request: web.Request,
    listener: contextlib.AbstractAsyncContextManager[JobEvents],
    start: Callable[[JobEvents], Awaitable[AsyncGenerator[bytes, None]]],
    what: str,
) -> web.StreamResponse:
    """An event stream (a job's, a batch's, a tenant's): subscribed by `listener` first; then
    `start` reads the state (no change falls between; its errors are still plain answers) and
    gives the frames, written until they end, the client goes, or the service stops (the
    stream is in `api.streams` meanwhile)."""
    api = request.app[API]
    resp = stream_response()
    async with listener as events:
        api.streams.add(events)
        try:
            frames = await start(events)
            await resp.prepare(request)
            await resp.write(b"retry: 3000\n\n")
            async with contextlib.aclosing(frames):
                async for frame in frames:
                    await resp.write(frame)
            await resp.write_eof()
        except ConnectionResetError:
            log.debug("event stream of %s: the client went away", what)
        except TransientError as exc:
            if not resp.prepared:
                raise
            # Headers are sent: end the stream, the client reconnects and starts afresh.
            log.warning("event stream of %s ended: %s", what, exc.message)
        finally:
            api.streams.discard(events)
    return resp


def stream_response() -> web.StreamResponse:
    """An event stream's response, before `prepare`."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )


async def _end_streams(app: web.Application) -> None:
    """At shutdown: end open event streams, so they do not hold the server's graceful stop."""
    for events in list(app[API].streams):
        while events.full():  # a bounded backlog (a batch's, a tenant's): what is unsent goes
            events.get_nowait()
        events.put_nowait({"type": SHUTDOWN})


async def with_estimate(request: web.Request, job: Job, view: dict[str, Any]) -> dict[str, Any]:
    """`view` plus `queue_position` and `eta_s` (null when ended or unknown); see
    shared/jobs/throughput.py for how rough they are."""
    api = request.app.get(API)
    if api is None:
        return view
    est = await estimate_now(api.ctx, job, api.meter)
    return {**view, "queue_position": est.queue_position, "eta_s": est.eta_s}


def quota_headers(request: web.Request, exc: QuotaExceeded) -> dict[str, str]:
    """`Retry-After` for a refused upload: when the excess pages should have drained."""
    api = request.app.get(API)
    rate = api.meter.pages_per_s if api is not None else None
    workers = api.ctx.settings.extract_workers if api is not None else 1
    return {"Retry-After": str(retry_after_s(exc.excess_pages, rate, workers))}


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    settings = app[API].ctx.settings
    task = asyncio.create_task(
        retention.sweep_forever(
            app[API].ctx.jobs,
            timedelta(days=settings.retention_days),
            settings.sweep_interval_s,
        ),
        name="pdfrelay-retention-sweeper",
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

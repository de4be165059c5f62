"""Job control over HTTP: list, cancel, follow (Server-Sent Events), status estimates, retention.

Its state is set up on the ingress application by `setup` (called from `ingress.create_app`);
its routes are in the table (handlers/http/routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from aiohttp import web

from handlers.http.common import tenant_of
from shared.errors import ErrorCode, PermanentError, QuotaExceeded, TransientError
from shared.intake.submit import Door
from shared.jobs.cancel import request_cancel
from shared.jobs.listing import MAX_LIMIT, InvalidCursor, JobFilter, list_jobs
from shared.jobs.outcome import TERMINAL_EVENTS, event_id
from shared.jobs.quota import retry_after_s
from shared.jobs.retention import apply_lifecycle, sweep
from shared.jobs.throughput import QueueState, ThroughputMeter, estimate
from shared.jobs.watch import JobWatcher
from shared.models import Job, JobStatus, utcnow
from shared.runtime.context import Context

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
CANCEL_WAIT_S = 10.0
"""DELETE waits this long for a running job's worker to be stopped, then answers 202."""
KEEPALIVE_S = 15.0
"""A quiet event stream gets a comment this often (and the job's state is re-read)."""
QUEUE_PROBE_TTL_S = 2.0
"""How old the extract queue's depth behind a queued job's ETA may be."""
_SHUTDOWN = "_shutdown"
TERMINAL_TYPES = frozenset(TERMINAL_EVENTS.values())
EventQueue = asyncio.Queue[dict[str, Any]]


@dataclass
class JobsApi:
    ctx: Context
    watcher: JobWatcher
    meter: ThroughputMeter = field(default_factory=ThroughputMeter)
    streams: set[EventQueue] = field(default_factory=set)
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


# --- GET /v1/jobs ----------------------------------------------------------------------------


async def get_jobs(request: web.Request) -> web.Response:
    """A page of the tenant's jobs, newest first (`status`, `door`, `client_ref`,
    `created_after`, `limit`, `cursor`)."""
    api = request.app[API]
    ctx = api.ctx
    tenant = tenant_of(request)
    query = request.query
    flt = JobFilter(
        statuses=_statuses(query.get("status")),
        door=_door(query.get("door")),
        client_ref=query.get("client_ref") or None,
        created_after=_timestamp(query.get("created_after")),
    )
    try:
        page = await list_jobs(
            ctx.jobs, tenant, flt, _limit(query.get("limit")), query.get("cursor") or None
        )
    except InvalidCursor as exc:
        raise PermanentError(str(exc), ErrorCode.INVALID_REQUEST) from exc
    views = await asyncio.gather(*(ctx.jobs.view(j, ctx.settings.base_url) for j in page.jobs))
    return web.json_response({"jobs": views, "next_cursor": page.next_cursor})


def _statuses(raw: str | None) -> frozenset[JobStatus]:
    if not raw:
        return frozenset()
    try:
        return frozenset(JobStatus(s.strip()) for s in raw.split(",") if s.strip())
    except ValueError as exc:
        raise PermanentError(
            f"status must be one or more of {', '.join(s.value for s in JobStatus)}",
            ErrorCode.INVALID_REQUEST,
        ) from exc


def _door(raw: str | None) -> str | None:
    if not raw:
        return None
    doors = get_args(Door)
    if raw not in doors:
        raise PermanentError(f"door must be one of {', '.join(doors)}", ErrorCode.INVALID_REQUEST)
    return raw


def _timestamp(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError as exc:
        raise PermanentError(
            "created_after must be an ISO 8601 time, e.g. 2024-05-01T12:00:00Z",
            ErrorCode.INVALID_REQUEST,
        ) from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise PermanentError(
            f"limit must be a whole number from 1 to {MAX_LIMIT}", ErrorCode.INVALID_REQUEST
        )
    return int(raw)


# --- DELETE /v1/jobs/{job_id} ----------------------------------------------------------------


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job: 200 cancelled, 202 still stopping, 409 it had ended."""
    api = request.app[API]
    ctx = api.ctx
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    if not job.status.terminal:
        async with api.watcher.listen(job.job_id) as events:
            job = await request_cancel(ctx, job)
            if not job.status.terminal:
                job = await _wait_for_end(ctx, job, events, CANCEL_WAIT_S)
    if job.status.terminal and job.status is not JobStatus.CANCELLED:
        raise PermanentError(
            f"the job has already ended ({job.status.value}); it cannot be cancelled",
            ErrorCode.CONFLICT,
        )
    view = await ctx.jobs.view(job, ctx.settings.base_url)
    return web.json_response(view, status=200 if job.status.terminal else 202)


async def _wait_for_end(ctx: Context, job: Job, events: EventQueue, wait: float) -> Job:
    try:
        async with asyncio.timeout(wait):
            while not job.status.terminal:
                if (await events.get())["type"] != "job.progress":
                    job = await ctx.jobs.get(job.job_id, job.tenant)
    except TimeoutError:
        job = await ctx.jobs.get(job.job_id, job.tenant)
    return job


# --- GET /v1/jobs/{job_id}/events ------------------------------------------------------------


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Event with a JSON payload (compact JSON has no line breaks)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def job_events(request: web.Request) -> web.StreamResponse:
    """The job now (`job.state`), then `job.progress` events and the terminal event; then EOF.

    A job that has already ended gets only its terminal event."""
    api = request.app[API]
    ctx = api.ctx
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    async with api.watcher.listen(job.job_id) as events:
        api.streams.add(events)
        try:
            # After subscribing: no change falls between.
            job = await ctx.jobs.get(job.job_id, job.tenant)
            await resp.prepare(request)
            await resp.write(b"retry: 3000\n\n")
            view = await ctx.jobs.view(job, ctx.settings.base_url)
            if job.status.terminal:
                await resp.write(_terminal(job, view))
            else:
                await resp.write(sse("job.state", view))
                await _follow(api, resp, job, events)
            await resp.write_eof()
        except ConnectionResetError:
            log.debug("event stream of job %s: the client went away", job.job_id)
        except TransientError as exc:
            # Headers are sent: end the stream, the client reconnects and starts afresh.
            log.warning("event stream of job %s ended: %s", job.job_id, exc.message)
        finally:
            api.streams.discard(events)
    return resp


def _terminal(job: Job, view: dict[str, Any]) -> bytes:
    kind = TERMINAL_EVENTS[job.status]
    return sse(kind, view, event_id(job.job_id, kind))


async def _follow(api: JobsApi, resp: web.StreamResponse, job: Job, events: EventQueue) -> None:
    job_id, tenant = job.job_id, job.tenant
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                event = await events.get()
        except TimeoutError:
            # Quiet: keep proxies from closing the stream, and make up for a lost event.
            job = await api.ctx.jobs.get(job_id, tenant)
            if job.status.terminal:
                await resp.write(
                    _terminal(job, await api.ctx.jobs.view(job, api.ctx.settings.base_url))
                )
                return
            await resp.write(b": keep-alive\n\n")
            continue
        kind = event["type"]
        if kind == _SHUTDOWN:
            return
        if kind == "job.progress":
            done = (event["data"].get("progress") or {}).get("pages_done")
            await resp.write(sse(kind, event["data"], f"{job_id}-progress-{done}"))
        elif kind in TERMINAL_TYPES:
            await resp.write(sse(kind, event["data"], event_id(job_id, kind)))
            return


async def _end_streams(app: web.Application) -> None:
    """At shutdown: end open event streams, so they do not hold the server's graceful stop."""
    for events in list(app[API].streams):
        events.put_nowait({"type": _SHUTDOWN})


# --- estimates and quota answers (used by ingress) -------------------------------------------


async def _extract_queue(ctx: Context) -> QueueState | None:
    depth = await ctx.metrics.queue_depth(ctx.topology.extract, QUEUE_PROBE_TTL_S)
    return QueueState(ready=depth[0], consumers=depth[1]) if depth is not None else None


async def with_estimate(request: web.Request, job: Job, view: dict[str, Any]) -> dict[str, Any]:
    """`view` plus `queue_position` and `eta_s` (null when ended or unknown); see
    shared/jobs/throughput.py for how rough they are."""
    api = request.app.get(API)
    if api is None:
        return view
    position: int | None = None
    eta: float | None = None
    if not job.status.terminal:
        queue = await _extract_queue(api.ctx) if job.status is JobStatus.QUEUED else None
        est = estimate(job, api.meter, queue, api.ctx.settings.extract_workers, utcnow())
        position, eta = est.queue_position, est.eta_s
    return {**view, "queue_position": position, "eta_s": eta}


def quota_headers(request: web.Request, exc: QuotaExceeded) -> dict[str, str]:
    """`Retry-After` for a refused upload: when the excess pages should have drained."""
    api = request.app.get(API)
    rate = api.meter.pages_per_s if api is not None else None
    workers = api.ctx.settings.extract_workers if api is not None else 1
    return {"Retry-After": str(retry_after_s(exc.excess_pages, rate, workers))}


# --- retention -------------------------------------------------------------------------------


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    ctx = app[API].ctx
    task = asyncio.create_task(_sweep_forever(ctx), name="pdfrelay-retention-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweep_forever(ctx: Context) -> None:
    retention = timedelta(days=ctx.settings.retention_days)
    lifecycle_tried = False
    while True:
        try:
            if not lifecycle_tried:
                lifecycle_tried = True
                await apply_lifecycle(ctx.jobs, retention)
            await sweep(ctx.jobs, retention)
        except TransientError as exc:
            log.warning("retention sweep interrupted: %s", exc.message)
        except Exception:
            # The sweeper must outlive a bad record; the next round tries again.
            log.exception("retention sweep failed")
        await asyncio.sleep(ctx.settings.sweep_interval_s)

"""Server-Sent Events: a job's (`GET /v1/jobs/{id}/events`: its events until it ends), a
batch's (`GET /v1/batches/{id}/events`: its items' events until `batch.completed`) and a
tenant's (`GET /v1/events`: every job of the tenant over one stream); the frames, and what the
handlers write (`follow`, `follow_batch`, `follow_tenant`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

from shared.errors import JobNotFound
from shared.jobs import batches
from shared.jobs.batches import Batch
from shared.jobs.outcome import TERMINAL_EVENTS, event_id
from shared.jobs.watch import LAGGED, JobEvents
from shared.models import Job
from shared.runtime.context import Context

KEEPALIVE_S = 15.0
"""A quiet event stream gets a comment this often (and the job's state is re-read)."""
SHUTDOWN = "_shutdown"
"""The type of the event put on a stream's queue to end it (the server is stopping)."""
TERMINAL_TYPES = frozenset(TERMINAL_EVENTS.values())
MAX_FOLLOWED = 200
"""Jobs whose state a tenant's stream sends first (`GET /v1/events?jobs=…`), at most."""


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Event with a JSON payload (compact JSON has no line breaks)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def terminal(job: Job, view: dict[str, Any]) -> bytes:
    """The ended job's terminal event, with its stable event id."""
    kind = TERMINAL_EVENTS[job.status]
    return sse(kind, view, event_id(job.job_id, kind))


async def follow(ctx: Context, job: Job, events: JobEvents) -> AsyncGenerator[bytes, None]:
    """The frames after the job's state: progress, keep-alives, then the terminal event (or
    nothing more at shutdown). `events`: the job's, subscribed before `job` was read."""
    job_id, tenant = job.job_id, job.tenant
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                event = await events.get()
        except TimeoutError:
            # Quiet: keep proxies from closing the stream, and make up for a lost event.
            job = await ctx.jobs.get(job_id, tenant)
            if job.status.terminal:
                yield terminal(job, await ctx.jobs.view(job, ctx.settings.base_url))
                return
            yield b": keep-alive\n\n"
            continue
        kind = event["type"]
        if kind == SHUTDOWN:
            return
        if kind == "job.progress":
            yield frame(event)
        elif kind in TERMINAL_TYPES:
            yield frame(event)
            return


def frame(event: dict[str, Any]) -> bytes:
    """One job event from the watcher as a frame, with its stable id (a progress event's names
    its pages done)."""
    kind, data = event["type"], event["data"]
    job_id = str(data.get("job_id"))
    if kind == "job.progress":
        done = (data.get("progress") or {}).get("pages_done")
        return sse(kind, data, f"{job_id}-progress-{done}")
    return sse(kind, data, event_id(job_id, kind))


async def batch_completed(ctx: Context, batch: Batch) -> bytes | None:
    """The batch's `batch.completed` frame (its stable event id, the view its webhook carried)
    once its completion is recorded; None before."""
    done = await batches.completion(ctx, batch.batch_id)
    if done is None:
        return None
    ends = await batches.ended(ctx, batch.batch_id)
    view = batches.summary(batch, ends, done, ctx.settings.base_url)
    return sse(batches.COMPLETED_EVENT, view, batches.event_id(batch.batch_id))


async def follow_batch(
    ctx: Context, batch: Batch, events: JobEvents
) -> AsyncGenerator[bytes, None]:
    """The frames after the batch's state: every event of its items (progress, ends,
    deliveries), keep-alives, then `batch.completed`; or nothing more at shutdown, or when the
    client fell so far behind that its backlog was dropped (it reconnects and reads the state
    afresh). `events`: the batch's, subscribed before its state was read."""
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                event = await events.get()
        except TimeoutError:
            # Quiet: keep proxies from closing the stream, and make up for a lost event.
            completed = await batch_completed(ctx, batch)
            if completed is not None:
                yield completed
                return
            yield b": keep-alive\n\n"
            continue
        kind = event["type"]
        if kind in (SHUTDOWN, LAGGED):
            return
        if kind == batches.COMPLETED_EVENT:
            yield sse(kind, event["data"], batches.event_id(batch.batch_id))
            return
        yield frame(event)


async def follow_tenant(
    ctx: Context, tenant: str, job_ids: list[str], events: JobEvents
) -> AsyncGenerator[bytes, None]:
    """The listed jobs as they are now (`job.state`, or the terminal event of one that has
    ended; nothing of an id the tenant has no job of), then every job event of the tenant, with
    keep-alives when quiet, until shutdown, or until the client fell so far behind that its
    backlog was dropped (it reconnects and reads the states afresh). `events`: the tenant's,
    subscribed before the states are read."""

    async def own(job_id: str) -> Job | None:
        try:
            return await ctx.jobs.get(job_id, tenant)
        except JobNotFound:
            return None

    jobs = [j for j in await asyncio.gather(*(own(i) for i in job_ids)) if j is not None]
    views = await asyncio.gather(*(ctx.jobs.view(j, ctx.settings.base_url) for j in jobs))
    for job, view in zip(jobs, views, strict=True):
        yield terminal(job, view) if job.status.terminal else sse("job.state", view)
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                event = await events.get()
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if event["type"] in (SHUTDOWN, LAGGED):
            return
        yield frame(event)


async def job_stream(
    ctx: Context, job: Job, view: dict[str, Any], events: JobEvents
) -> AsyncGenerator[bytes, None]:
    """A job's stream from its state read after subscribing: its terminal event alone when it
    has ended, else `job.state` and what `follow` writes."""
    if job.status.terminal:
        yield terminal(job, view)
        return
    yield sse("job.state", view)
    async with contextlib.aclosing(follow(ctx, job, events)) as frames:
        async for frame in frames:
            yield frame


async def batch_stream(
    ctx: Context, batch: Batch, first: bytes, events: JobEvents
) -> AsyncGenerator[bytes, None]:
    """A batch's stream from its state read after subscribing: `first` (its `batch.completed`
    when it has completed, the stream's only frame then; else `batch.state`), then what
    `follow_batch` writes."""
    yield first
    if first.startswith(f"event: {batches.COMPLETED_EVENT}\n".encode()):
        return
    async with contextlib.aclosing(follow_batch(ctx, batch, events)) as frames:
        async for frame in frames:
            yield frame

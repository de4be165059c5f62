"""A job's Server-Sent Events (`GET /v1/jobs/{id}/events`): the frames, and following the job's
events until it ends; the handler writes what `follow` yields."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from shared.jobs.outcome import TERMINAL_EVENTS, event_id
from shared.jobs.watch import JobEvents
from shared.models import Job
from shared.runtime.context import Context

KEEPALIVE_S = 15.0
"""A quiet event stream gets a comment this often (and the job's state is re-read)."""
SHUTDOWN = "_shutdown"
"""The type of the event put on a stream's queue to end it (the server is stopping)."""
TERMINAL_TYPES = frozenset(TERMINAL_EVENTS.values())


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
            done = (event["data"].get("progress") or {}).get("pages_done")
            yield sse(kind, event["data"], f"{job_id}-progress-{done}")
        elif kind in TERMINAL_TYPES:
            yield sse(kind, event["data"], event_id(job_id, kind))
            return

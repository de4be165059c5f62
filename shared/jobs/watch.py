"""Wake up long-polls and event streams when a job or a batch changes, from the events exchange."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared.jobs.batches import COMPLETED_EVENT as BATCH_COMPLETED
from shared.jobs.records import JobStore
from shared.models import Job
from shared.runtime.context import Context

JobEvents = asyncio.Queue[dict[str, Any]]
"""One listener's events of a job: `{"type": routing key, "data": the job's view}`."""

BACKLOG = 1000
"""Events a batch's or a tenant's stream may hold unsent (a batch of many items ends many jobs
at once); past it the stream is told it lagged."""
LAGGED = "_lagged"
"""The type of the event that replaces such a stream's backlog when it overflowed: the stream
ends, and its client reconnects and reads the states afresh."""


class JobWatcher:
    """One exclusive, auto-deleted queue per process, bound to every job event and to
    `batch.completed`."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[JobEvents]] = defaultdict(set)
        self._batches: dict[str, set[JobEvents]] = defaultdict(set)
        self._tenants: dict[str, set[JobEvents]] = defaultdict(set)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self.observers: list[Callable[[str, bytes], None]] = []
        """Told (routing key, body) of every job event, whoever listens (throughput meter)."""

    async def start(self, ctx: Context) -> None:
        self._channel = await ctx.connection.channel()
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(ctx.topology.events, routing_key="job.#")
        await self._queue.bind(ctx.topology.events, routing_key=BATCH_COMPLETED)
        await self._queue.consume(self._on_event, no_ack=True)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        for observe in self.observers:
            observe(message.routing_key or "", message.body)
        headers = message.headers or {}
        job_id, batch_id = headers.get("job_id"), headers.get("batch_id")
        tenant = headers.get("tenant") if (message.routing_key or "").startswith("job.") else None
        jobs = self._listeners.get(job_id) if isinstance(job_id, str) else None
        batches = self._batches.get(batch_id) if isinstance(batch_id, str) else None
        tenants = self._tenants.get(tenant) if isinstance(tenant, str) else None
        if not jobs and not batches and not tenants:
            return
        event = {"type": message.routing_key, "data": json.loads(message.body)}
        for q in jobs or ():
            q.put_nowait(event)
        for q in (*(batches or ()), *(tenants or ())):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                # A client that does not read: drop its backlog, not the process's memory.
                while not q.empty():
                    q.get_nowait()
                q.put_nowait({"type": LAGGED})

    @contextlib.asynccontextmanager
    async def listen(self, job_id: str) -> AsyncIterator[JobEvents]:
        """Events for `job_id` while the block runs; subscribe before reading the state."""
        q: JobEvents = asyncio.Queue()
        self._listeners[job_id].add(q)
        try:
            yield q
        finally:
            self._listeners[job_id].discard(q)
            if not self._listeners[job_id]:
                del self._listeners[job_id]

    def listen_batch(self, batch_id: str) -> contextlib.AbstractAsyncContextManager[JobEvents]:
        """The events of the batch's items and its `batch.completed` while the block runs;
        subscribe before reading the batch's state."""
        return _bounded(self._batches, batch_id)

    def listen_tenant(self, tenant: str) -> contextlib.AbstractAsyncContextManager[JobEvents]:
        """Every job event of `tenant` while the block runs (one stream for many jobs)."""
        return _bounded(self._tenants, tenant)


@contextlib.asynccontextmanager
async def _bounded(registry: dict[str, set[JobEvents]], key: str) -> AsyncIterator[JobEvents]:
    """A listener of at most `BACKLOG` unsent events under `key` while the block runs."""
    q: JobEvents = asyncio.Queue(BACKLOG)
    registry[key].add(q)
    try:
        yield q
    finally:
        registry[key].discard(q)
        if not registry[key]:
            del registry[key]


async def until_ended(jobs: JobStore, job: Job, events: JobEvents, wait: float) -> Job:
    """The job once it has ended, or as it is after `wait` seconds. `events`: the job's,
    subscribed before `job` was read (an ending in between is not missed)."""
    try:
        async with asyncio.timeout(wait):
            while not job.status.terminal:
                if (await events.get())["type"] != "job.progress":
                    job = await jobs.get(job.job_id, job.tenant)
    except TimeoutError:
        job = await jobs.get(job.job_id, job.tenant)
    return job

"""Wake up long-polls and event streams when a job changes, from the events exchange."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared.runtime.context import Context


class JobWatcher:
    """One exclusive, auto-deleted queue per process, bound to every job event."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self.observers: list[Callable[[str, bytes], None]] = []
        """Told (routing key, body) of every job event, whoever listens (throughput meter)."""

    async def start(self, ctx: Context) -> None:
        self._channel = await ctx.connection.channel()
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(ctx.topology.events, routing_key="job.#")
        await self._queue.consume(self._on_event, no_ack=True)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        for observe in self.observers:
            observe(message.routing_key or "", message.body)
        job_id = (message.headers or {}).get("job_id")
        if not isinstance(job_id, str) or job_id not in self._listeners:
            return
        event = {"type": message.routing_key, "data": json.loads(message.body)}
        for q in self._listeners[job_id]:
            q.put_nowait(event)

    @contextlib.asynccontextmanager
    async def listen(self, job_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Events for `job_id` while the block runs; subscribe before reading the state."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners[job_id].add(q)
        try:
            yield q
        finally:
            self._listeners[job_id].discard(q)
            if not self._listeners[job_id]:
                del self._listeners[job_id]

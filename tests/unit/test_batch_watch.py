"""The watcher routes a batch's item events and its `batch.completed` to the batch's streams,
and a stream that does not read has its backlog bounded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from shared.jobs import watch
from shared.jobs.watch import LAGGED, JobWatcher

BATCH, JOB, OTHER = "b" * 32, "a" * 32, "c" * 32


@dataclass
class Message:
    routing_key: str
    headers: dict[str, Any]
    body: bytes = field(default=b"{}")


async def deliver(watcher: JobWatcher, key: str, **headers: str) -> None:
    message = Message(key, dict(headers), json.dumps({"job_id": headers.get("job_id")}).encode())
    await watcher._on_event(cast(AbstractIncomingMessage, message))


async def test_item_events_and_batch_completed_reach_the_batchs_stream_only() -> None:
    watcher = JobWatcher()
    async with watcher.listen_batch(BATCH) as events, watcher.listen(JOB) as job_events:
        await deliver(watcher, "job.progress", job_id=JOB, tenant="t", batch_id=BATCH)
        await deliver(watcher, "job.completed", job_id=OTHER, tenant="t")  # not an item
        await deliver(watcher, "batch.completed", batch_id=BATCH, tenant="t")
        got = [events.get_nowait()["type"] for _ in range(events.qsize())]
        assert got == ["job.progress", "batch.completed"]
        assert job_events.get_nowait()["type"] == "job.progress"  # the job's own stream too
    assert not watcher._batches  # unsubscribed when left
    assert not watcher._listeners


async def test_a_stream_that_does_not_read_is_told_it_lagged(monkeypatch: Any) -> None:
    monkeypatch.setattr(watch, "BACKLOG", 3)
    watcher = JobWatcher()
    async with watcher.listen_batch(BATCH) as events:
        for _ in range(4):
            await deliver(watcher, "job.progress", job_id=JOB, batch_id=BATCH)
        assert events.qsize() == 1
        assert events.get_nowait() == {"type": LAGGED}

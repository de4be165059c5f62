"""The job watcher's tenant listeners (one stream for many jobs), without a broker."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import cast

from aio_pika.abc import AbstractIncomingMessage

from shared.jobs import watch
from shared.jobs.watch import LAGGED, JobWatcher


def event(job_id: str, tenant: str, kind: str = "job.progress") -> AbstractIncomingMessage:
    body = json.dumps({"job_id": job_id, "status": "processing"}).encode()
    message = SimpleNamespace(
        routing_key=kind, body=body, headers={"job_id": job_id, "tenant": tenant}
    )
    return cast(AbstractIncomingMessage, message)


async def test_a_tenant_listener_hears_its_tenants_jobs_only_and_a_laggard_is_cut_off() -> None:
    watcher = JobWatcher()
    async with watcher.listen_tenant("acme") as acme, watcher.listen("j1") as one:
        await watcher._on_event(event("j1", "acme"))
        await watcher._on_event(event("j2", "acme", "job.completed"))
        await watcher._on_event(event("x1", "globex"))
        assert [acme.get_nowait()["data"]["job_id"] for _ in range(2)] == ["j1", "j2"]
        assert acme.empty()
        assert one.get_nowait()["data"]["job_id"] == "j1"
        assert one.empty()
        # A client that stops reading holds at most the backlog, then is told it lagged.
        for _ in range(watch.BACKLOG + 5):
            await watcher._on_event(event("j1", "acme"))
        assert acme.qsize() <= watch.BACKLOG
        kinds = [acme.get_nowait()["type"] for _ in range(acme.qsize())]
        assert LAGGED in kinds
    # Gone with its block: nothing is kept for a tenant nobody listens to.
    assert not watcher._tenants
    assert not watcher._listeners

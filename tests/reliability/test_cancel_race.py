"""A cancel racing a job's completion: the job ends once.

The ingress ends a job whose record still says `queued` at once; the extract handler may hold
that job's task already (a cache hit needs no worker slot, and a short job's record is written
only at its end, so the record never said `processing`), and it completes the job from the
record its task carried, without reading it. A fuzzing finding first (the cancel during a cache
hit), then the 12-minute soak's one job that ended twice (issue 21): a cancel landing between
the handler's last look and its write. Both writes are now conditional on the record's version
(shared/jobs/lifecycle.py), so exactly one ending is stored; the other side stands back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import cache
from shared.jobs.records import JobStore
from shared.models import Job, JobStatus
from tests.reliability.harness import document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_a_cancel_during_a_cache_hit_ends_the_job_once(
    fault_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fault_settings(extract_workers=1)
    async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
        await svc.serve_ingress()
        svc.run_inproc("extract", "webhooks")
        async with Ledger(
            "9c-cancel-during-cache-hit",
            "DELETE of a job whose cache hit the extract handler is storing",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            rec = await ledger.receiver("hook")
            pdf, words = document(1)
            await ledger.upload(pdf, words, receiver=rec)
            assert await ledger.settle(60)

            reached, release = asyncio.Event(), asyncio.Event()
            lookup = cache.lookup

            async def held_lookup(*args: Any) -> cache.Lookup:
                found = await lookup(*args)
                reached.set()
                await release.wait()
                return found

            monkeypatch.setattr(cache, "lookup", held_lookup)
            again = await ledger.upload(pdf, words, receiver=rec, outcome="cancelled")
            async with asyncio.timeout(30):
                await reached.wait()
            async with ledger.fault("DELETE while the hit is being stored"):
                async with svc.http.delete(f"{svc.base_url}/v1/jobs/{again.job_id}") as resp:
                    assert resp.status in (200, 202), await resp.text()
                    assert (await resp.json())["status"] == "cancelled"
                release.set()
            await ledger.check(within=60, refused_ok=False)
        assert ledger.counts.cancelled == 1


@dataclass
class HeldWrite:
    """The first record write of a job's `status`, held just before it goes to S3."""

    status: JobStatus
    job_id: str | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        save = JobStore.save

        async def held_save(store: JobStore, job: Job, *args: Any, **kwargs: Any) -> Any:
            if job.status is not self.status or self.reached.is_set():
                return await save(store, job, *args, **kwargs)
            self.job_id = job.job_id
            self.reached.set()
            await self.release.wait()
            try:
                return await save(store, job, *args, **kwargs)
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.done.set()

        monkeypatch.setattr(JobStore, "save", held_save)


@contextlib.asynccontextmanager
async def _race(
    fault_settings: Any, tmp_path: Path, name: str, what: str
) -> AsyncIterator[tuple[Any, Ledger]]:
    """The scenarios' service (one worker, extract and webhooks in this process) and ledger."""
    settings = fault_settings(extract_workers=1)
    async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
        await svc.serve_ingress()
        svc.run_inproc("extract", "webhooks")
        async with Ledger(name, what, settings, svc.http, svc.base_url) as ledger:
            yield svc, ledger


async def _warmed_up(ledger: Ledger) -> tuple[Any, bytes, tuple[str, ...]]:
    """A receiver, and the scenario's document extracted once (its hit is in the cache)."""
    rec = await ledger.receiver("hook")
    pdf, words = document(1)
    await ledger.upload(pdf, words, receiver=rec)
    assert await ledger.settle(60)
    return rec, pdf, words


@pytest.mark.timeout(120)
async def test_a_cancel_between_the_handlers_last_look_and_its_completion_ends_the_job_once(
    fault_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak's job that ended twice: the handler has decided to complete and is about to
    write; the ingress cancels the job (its record says queued) and answers 200 cancelled;
    then the handler's write comes. Without conditional writes it stored `completed` over
    `cancelled`, and announced it: two endings."""
    async with _race(
        fault_settings,
        tmp_path,
        "9d-cancel-before-completion-write",
        "DELETE of a queued job whose completion the extract handler is writing",
    ) as (svc, ledger):
        rec, pdf, words = await _warmed_up(ledger)
        completion = HeldWrite(JobStatus.COMPLETED)
        completion.install(monkeypatch)
        again = await ledger.upload(pdf, words, receiver=rec, outcome="cancelled")
        async with asyncio.timeout(30):
            await completion.reached.wait()
        assert completion.job_id == again.job_id
        async with ledger.fault("DELETE while the completion is being written"):
            async with svc.http.delete(f"{svc.base_url}/v1/jobs/{again.job_id}") as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["status"] == "cancelled"
            completion.release.set()
            async with asyncio.timeout(30):
                await completion.done.wait()
        await ledger.check(within=60, refused_ok=False)
    assert ledger.counts.cancelled == 1
    assert ledger.counts.completed == 1  # the warm-up


@pytest.mark.timeout(120)
async def test_a_completion_between_the_cancels_read_and_its_write_ends_the_job_once(
    fault_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the ingress has read the record (queued) and is about to store
    `cancelled` when the handler stores `completed`. The completion stands; the DELETE
    answers 409 (the job has already ended), and no `job.cancelled` goes out."""
    async with _race(
        fault_settings,
        tmp_path,
        "9e-completion-before-cancel-write",
        "a completion stored while the DELETE of its queued job is about to write",
    ) as (svc, ledger):
        rec, pdf, words = await _warmed_up(ledger)
        completion = HeldWrite(JobStatus.COMPLETED)
        completion.install(monkeypatch)
        cancel = HeldWrite(JobStatus.CANCELLED)
        cancel.install(monkeypatch)
        again = await ledger.upload(pdf, words, receiver=rec)
        async with asyncio.timeout(30):
            await completion.reached.wait()

        async def delete() -> tuple[int, Any]:
            async with svc.http.delete(f"{svc.base_url}/v1/jobs/{again.job_id}") as resp:
                return resp.status, await resp.json()

        async with ledger.fault("completion while the DELETE is about to write"):
            deleting = asyncio.create_task(delete())
            async with asyncio.timeout(30):
                await cancel.reached.wait()
            completion.release.set()
            async with asyncio.timeout(30):
                await completion.done.wait()
            cancel.release.set()
            status, body = await deleting
        assert completion.error is None
        assert status == 409, body
        assert body["error"]["code"] == "CONFLICT"
        await ledger.check(within=60, refused_ok=False)
    assert ledger.counts.completed == 2
    assert ledger.counts.cancelled == 0

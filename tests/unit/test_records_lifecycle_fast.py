"""The job record's life on an in-memory store: fast, beside the real-S3 tests of the same.

The transitions (shared/jobs/lifecycle.py) build the record; the record store
(shared/jobs/records.py) writes it once per transition, walls tenants off, releases quota holds
and keeps secrets out of the public view.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import pytest

from shared.errors import JobNotFound, WriteConflict
from shared.jobs import lifecycle
from shared.jobs.listing import EndedRecords, JobFilter, list_jobs
from shared.jobs.records import (
    IdempotencyClaim,
    JobStore,
    Revision,
    cancel_key,
    inflight_key,
    record_key,
    upload_key,
)
from shared.models import (
    Job,
    JobResultSummary,
    JobStatus,
    WebhookState,
    new_job_id,
)
from shared.runtime.context import Context
from tests.fakes import InMemoryStore


def _job(**fields: object) -> Job:
    return Job.model_validate({"job_id": new_job_id(), "tenant": "acme", **fields})


async def test_a_job_lives_from_queued_to_completed_one_write_per_transition() -> None:
    store = InMemoryStore()
    jobs = JobStore(store)
    job = _job()
    await jobs.create(job)
    assert store.requests == [("put", record_key("acme", job.job_id))]

    running = lifecycle.started(job, attempts=1)
    await jobs.save(running)
    summary = JobResultSummary(page_count=3, pages_extracted=3)
    done = lifecycle.completed(running, summary)
    await jobs.save(done)
    puts = [r for r in store.requests if r[0] == "put"]
    assert len(puts) == 3  # created, started, completed: one record write each

    read = await jobs.get(job.job_id, "acme")
    assert read.status is JobStatus.COMPLETED
    assert read.attempts == 1
    assert read.started_at is not None
    assert read.finished_at is not None
    assert read.progress.pages_done == read.progress.pages_total == 3
    assert read.result == summary


async def test_of_two_writers_that_saw_one_version_exactly_one_lands() -> None:
    jobs = JobStore(InMemoryStore())
    job = _job()
    accepted = await jobs.create(job)
    handler, ingress = Revision(accepted.etag), Revision(accepted.etag)
    await jobs.save(lifecycle.cancelled(job), ingress)
    assert ingress.etag != accepted.etag  # moved on with its write
    summary = JobResultSummary(page_count=1, pages_extracted=1)
    with pytest.raises(WriteConflict):
        await jobs.save(lifecycle.completed(job, summary), handler)
    assert (await jobs.get(job.job_id, "acme")).status is JobStatus.CANCELLED
    # The winner's next write is over its own version.
    await jobs.save(lifecycle.cancelled(job), ingress)


async def test_an_ending_over_a_stale_version_finds_the_one_stored() -> None:
    store = InMemoryStore()
    jobs = JobStore(store)
    ctx = cast(Context, SimpleNamespace(jobs=jobs))
    summary = JobResultSummary(page_count=1, pages_extracted=1)

    job = _job()
    accepted = await jobs.create(job)
    cancelled = lifecycle.cancelled(job)
    await jobs.save(cancelled, Revision(accepted.etag))
    completed = lifecycle.completed(job, summary)
    stored = await lifecycle._store_ending(ctx, completed, Revision(accepted.etag))
    assert stored == cancelled  # the first ending stands, nothing else written
    assert (await jobs.get(job.job_id, "acme")).status is JobStatus.CANCELLED

    # A version moved on by progress (another delivery's) is no ending: written over.
    job = _job()
    accepted = await jobs.create(job)
    await jobs.save(lifecycle.started(job, attempts=2), Revision(accepted.etag))
    completed = lifecycle.completed(job, summary)
    assert await lifecycle._store_ending(ctx, completed, Revision(accepted.etag)) is completed
    assert (await jobs.get(job.job_id, "acme")).status is JobStatus.COMPLETED
    # ...but the ingress cancels only a job still queued.
    job = _job()
    accepted = await jobs.create(job)
    running = lifecycle.started(job, attempts=1)
    await jobs.save(running, Revision(accepted.etag))
    found = await lifecycle._store_ending(
        ctx, lifecycle.cancelled(job), Revision(accepted.etag), only_from=JobStatus.QUEUED
    )
    assert found == running

    # Our own write landed and its answer was lost (a retried PUT meets its own version).
    job = _job()
    accepted = await jobs.create(job)
    completed = lifecycle.completed(job, summary)
    await jobs.save(completed, Revision(accepted.etag))
    assert await lifecycle._store_ending(ctx, completed, Revision(accepted.etag)) is completed

    # No version known (a task of an older ingress): the record is read first.
    job = _job()
    await jobs.create(job)
    completed = lifecycle.completed(job, summary)
    assert await lifecycle._store_ending(ctx, completed, Revision()) is completed


async def test_failed_and_cancelled_are_terminal_with_their_reason() -> None:
    failed = lifecycle.failed(_job(), "NOT_A_PDF", "the file is not a PDF")
    assert failed.status.terminal
    assert failed.error is not None
    assert failed.error.code == "NOT_A_PDF"
    cancelled = lifecycle.cancelled(_job())
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None


async def test_another_tenant_or_a_malformed_id_finds_nothing() -> None:
    jobs = JobStore(InMemoryStore())
    job = _job()
    await jobs.create(job)
    with pytest.raises(JobNotFound):
        await jobs.get(job.job_id, "someone-else")
    with pytest.raises(JobNotFound):
        await jobs.get("../../etc/passwd", "acme")


async def test_an_ended_job_gives_back_its_quota_hold() -> None:
    store = InMemoryStore()
    jobs = JobStore(store)
    job = _job(pages_reserved=7)
    hold = inflight_key("acme", job.job_id, 7)
    await store.put_bytes(hold, b"", "application/octet-stream")
    await jobs.create(job)
    await jobs.save(lifecycle.started(job, attempts=1))
    assert hold in store.names()  # still running: still held
    await jobs.save(lifecycle.failed(job, "EXTRACTION_FAILED", "boom"))
    assert hold not in store.names()


async def test_discard_takes_back_everything_a_refused_job_wrote() -> None:
    store = InMemoryStore()
    jobs = JobStore(store)
    job = _job(pages_reserved=2)
    job.source_key = upload_key(job.job_id)
    await store.put_bytes(job.source_key, b"%PDF-", "application/pdf")
    await store.put_bytes(inflight_key("acme", job.job_id, 2), b"")
    await jobs.create(job)
    await jobs.discard(job)
    assert store.names() == set()


async def test_cancel_marker_idempotency_and_webhook_state() -> None:
    store = InMemoryStore()
    jobs = JobStore(store)
    job = _job(webhook_url="https://hooks.example/x")
    await jobs.create(job)

    assert not await jobs.cancel_requested(job.job_id)
    await jobs.request_cancel(job.job_id)
    assert cancel_key(job.job_id) in store.names()
    assert await jobs.cancel_requested(job.job_id)

    assert await jobs.find_idempotent("acme", "key-1") is None
    mine = IdempotencyClaim(job_id=job.job_id, request="r1")
    assert await jobs.claim_idempotent("acme", "key-1", mine) is None
    assert await jobs.find_idempotent("acme", "key-1") == job.job_id
    assert await jobs.find_idempotent("other", "key-1") is None
    # A second claim of the key gets the first one back; the key stays bound to it.
    assert await jobs.claim_idempotent("acme", "key-1", IdempotencyClaim(job_id="x")) == mine
    assert await jobs.find_idempotent("acme", "key-1") == job.job_id
    await jobs.release_idempotent("acme", "key-1")
    assert await jobs.find_idempotent("acme", "key-1") is None

    state = WebhookState(state="delivered", url="https://hooks.example/x", attempts=1)
    await jobs.save_webhook_state(job.job_id, state, sealed="secret-sealed-blob")
    read = await jobs.webhook_state(job.job_id)
    assert read is not None
    assert read.state == "delivered"
    assert read.sealed == "secret-sealed-blob"
    view = await jobs.view(job, "http://pdfrelay.test")
    assert view["job_id"] == job.job_id
    assert "secret-sealed-blob" not in str(view)


async def test_a_tenants_list_is_newest_first_paged_and_filtered() -> None:
    jobs = JobStore(InMemoryStore())
    base = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for i in range(5):
        at = base + timedelta(minutes=i)
        job = Job(job_id=new_job_id(at), tenant="acme", created_at=at, client_ref=f"r{i % 2}")
        await jobs.create(job)
        made.append(job.job_id)
    await jobs.create(_job(tenant="other"))

    first = await list_jobs(jobs, "acme", JobFilter(), limit=3)
    assert [j.job_id for j in first.jobs] == made[::-1][:3]
    assert first.next_cursor is not None
    rest = await list_jobs(jobs, "acme", JobFilter(), limit=3, cursor=first.next_cursor)
    assert [j.job_id for j in rest.jobs] == made[::-1][3:]
    assert rest.next_cursor is None
    odd = await list_jobs(jobs, "acme", JobFilter(client_ref="r1"), limit=10)
    assert [j.job_id for j in odd.jobs] == [made[3], made[1]]


async def test_a_list_page_reads_only_the_records_it_shows_and_an_ended_one_once() -> None:
    store = InMemoryStore()
    jobs = JobStore(store)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    made: list[Job] = []
    for i in range(60):  # the 57 oldest ended, the 3 newest still queued
        at = base + timedelta(seconds=i)
        job = Job(job_id=new_job_id(at), tenant="acme", created_at=at)
        await jobs.create(job)
        if i < 57:
            job = lifecycle.cancelled(job)
            await jobs.save(job)
        made.append(job)
    newest_first = [j.job_id for j in reversed(made)]
    ended = EndedRecords()

    def reads() -> list[tuple[str, str]]:
        seen = [r for r in store.requests if r[0] in ("get", "list")]
        store.requests.clear()
        return seen

    reads()
    page = await list_jobs(jobs, "acme", JobFilter(), 25, ended=ended)
    assert [j.job_id for j in page.jobs] == newest_first[:25]
    assert [op for op, _ in reads()].count("get") == 25  # one per row shown, no more
    # Again: only the three jobs still moving are read; an ended job's record does not change.
    again = await list_jobs(jobs, "acme", JobFilter(), 25, ended=ended)
    assert again.jobs == page.jobs
    assert [op for op, _ in reads()] == ["list", "get", "get", "get"]
    # A job that ends meanwhile is shown ended (it was never kept while it moved).
    await jobs.save(lifecycle.cancelled(made[-1]))
    third = await list_jobs(jobs, "acme", JobFilter(), 25, ended=ended)
    assert third.jobs[0].status is JobStatus.CANCELLED
    # The next page through the cursor, and a filter, read what they have not read before.
    reads()
    rest = await list_jobs(jobs, "acme", JobFilter(), 25, page.next_cursor, ended=ended)
    assert [j.job_id for j in rest.jobs] == newest_first[25:50]
    assert [op for op, _ in reads()].count("get") == 25
    queued = await list_jobs(
        jobs, "acme", JobFilter(statuses=frozenset({JobStatus.QUEUED})), 25, ended=ended
    )
    assert [j.job_id for j in queued.jobs] == newest_first[1:3]
    assert [op for op, _ in reads()].count("get") == 2 + 10  # the moving two, the 10 unread
    # Another tenant reaches none of them, whatever this process remembers.
    assert (await list_jobs(jobs, "other", JobFilter(), 25, ended=ended)).jobs == []

"""Cancelling a job (`DELETE /v1/jobs/{id}`) on the in-memory store and broker: fast, beside
tests/integration/test_job_control.py."""

from __future__ import annotations

import pytest

from shared.errors import ErrorCode, PermanentError
from shared.jobs import lifecycle
from shared.jobs.cancel import CancelRequest, cancel_and_wait
from shared.jobs.outcome import event_id
from shared.jobs.records import cancel_key
from shared.jobs.watch import JobWatcher
from shared.models import Job, JobResultSummary, JobStatus, new_job_id
from shared.runtime.context import Context
from tests.fakes import InMemoryBroker, InMemoryStore, fake_context


async def _setup(**fields: object) -> tuple[Context, InMemoryStore, InMemoryBroker, Job]:
    store, broker = InMemoryStore(), InMemoryBroker()
    ctx = fake_context(store, broker)
    job = Job.model_validate({"job_id": new_job_id(), "tenant": "acme", **fields})
    await lifecycle.accept(ctx, job)
    return ctx, store, broker, job


async def test_a_queued_job_is_cancelled_at_once_and_the_extract_side_is_told() -> None:
    ctx, store, broker, job = await _setup()
    cancelled = await cancel_and_wait(ctx, JobWatcher(), job, wait=10.0)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancel_key(job.job_id) in store.names()
    [event] = broker.to(ctx.topology.events)
    assert event.message_id == event_id(job.job_id, "job.cancelled")
    [told] = broker.to(ctx.topology.control)
    assert CancelRequest.model_validate_json(told.body).job_id == job.job_id


async def test_a_running_job_not_stopped_in_time_is_answered_as_it_is() -> None:
    ctx, _store, broker, job = await _setup()
    running = lifecycle.started(job, attempts=1)
    await ctx.jobs.save(running)
    still = await cancel_and_wait(ctx, JobWatcher(), running, wait=0.0)
    assert still.status is JobStatus.PROCESSING  # the handler answers 202: being stopped
    assert broker.to(ctx.topology.events) == []  # its ending is the extract side's to announce
    assert len(broker.to(ctx.topology.control)) == 1


async def test_an_ended_job_cannot_be_cancelled_and_a_cancelled_one_stays_so() -> None:
    ctx, _store, broker, job = await _setup()
    done = lifecycle.completed(job, JobResultSummary(page_count=1, pages_extracted=1))
    with pytest.raises(PermanentError) as refused:
        await cancel_and_wait(ctx, JobWatcher(), done, wait=10.0)
    assert refused.value.code is ErrorCode.CONFLICT
    cancelled = lifecycle.cancelled(job)
    assert await cancel_and_wait(ctx, JobWatcher(), cancelled, wait=10.0) == cancelled
    assert broker.published == []

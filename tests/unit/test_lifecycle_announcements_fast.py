"""What each ending of a job announces, on the in-memory store and broker: fast, beside the
real-broker tests of the same (tests/integration/test_core.py, test_webhooks.py, test_doors.py).

Every ending (shared/jobs/lifecycle.py) writes the record once and announces it once: one event
on the events exchange, one webhook delivery when the job has a webhook, one reply when it came
with `reply_to`. A redelivery announces the same ending again with the same ids, writing nothing.
"""

from __future__ import annotations

from collections import Counter

import pytest

from shared.doors.outbox import outbox_key
from shared.doors.table import DOORS
from shared.errors import ErrorCode
from shared.jobs import lifecycle, progress
from shared.jobs.outcome import event_id
from shared.jobs.progress import ProgressReporter
from shared.jobs.records import record_key
from shared.models import Job, JobResultSummary, JobStatus, JobTarget, WebhookSpec, new_job_id
from shared.runtime.context import Context
from tests.fakes import InMemoryBroker, InMemoryStore, fake_context

HOOK = WebhookSpec(url="https://hooks.example/done", token="tok")


class Fakes:
    def __init__(self) -> None:
        self.store = InMemoryStore()
        self.broker = InMemoryBroker()
        self.ctx: Context = fake_context(self.store, self.broker, DOORS)

    def events(self) -> list[tuple[str, str | None]]:
        """(routing key, message id) of each event published."""
        return [(p.routing_key, p.message_id) for p in self.broker.to(self.ctx.topology.events)]

    def hooks(self) -> list[tuple[str, str]]:
        """(event type, event id) of each webhook delivery queued."""
        return [
            (d.event_type, d.event_id)
            for d in self.broker.deliveries(self.ctx.topology.webhooks_exchange)
        ]

    def record_writes(self, job: Job) -> int:
        key = record_key(job.tenant, job.job_id)
        return self.store.requests.count(("put", key))

    async def accepted(self, **fields: object) -> Job:
        job = Job.model_validate({"job_id": new_job_id(), "tenant": "acme", **fields})
        await lifecycle.accept(self.ctx, job)
        return job


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def _ids(job: Job, kind: str) -> tuple[str, str]:
    return kind, event_id(job.job_id, kind)


def _ended(job: Job, ending: str) -> Job:
    if ending == "completed":
        return lifecycle.completed(job, JobResultSummary(page_count=2, pages_extracted=2))
    if ending == "failed":
        return lifecycle.failed(job, ErrorCode.NOT_A_PDF, "the file is not a PDF")
    return lifecycle.cancelled(job)


def _count(ctx: Context, name: str, **labels: str) -> float | None:
    return ctx.metrics.registry.get_sample_value(f"pdfrelay_{name}_total", labels)


async def test_accepted_is_one_event_and_no_webhook(fakes: Fakes) -> None:
    job = await fakes.accepted(webhook_url=HOOK.url)
    await lifecycle.announce_accepted(fakes.ctx, job)
    assert fakes.events() == [_ids(job, "job.accepted")]
    assert fakes.hooks() == []


@pytest.mark.parametrize(
    ("ending", "kind"),
    [
        ("completed", "job.completed"),
        ("failed", "job.failed"),
        ("cancelled", "job.cancelled"),
    ],
)
async def test_an_ending_is_one_write_one_event_one_webhook(
    fakes: Fakes, ending: str, kind: str
) -> None:
    job = lifecycle.started(await fakes.accepted(webhook_url=HOOK.url), attempts=1)
    ended = _ended(job, ending)
    await lifecycle.end(fakes.ctx, ended, HOOK)

    assert fakes.record_writes(job) == 2  # accepted, ended
    assert fakes.events() == [_ids(job, kind)]
    assert fakes.hooks() == [_ids(job, kind)]
    [delivery] = fakes.broker.deliveries(fakes.ctx.topology.webhooks_exchange)
    assert (delivery.url, delivery.token) == (HOOK.url, HOOK.token)
    [event] = fakes.broker.to(fakes.ctx.topology.events)
    assert event.json()["status"] == ended.status.value
    assert event.properties.get("headers") == {"job_id": job.job_id, "tenant": "acme"}
    assert _count(fakes.ctx, "jobs", state=ended.status.value, door="http") == 1


async def test_an_ending_without_a_webhook_queues_none(fakes: Fakes) -> None:
    job = await fakes.accepted()
    await lifecycle.end(fakes.ctx, lifecycle.failed(job, ErrorCode.PDF_DAMAGED, "broken"), None)
    assert fakes.events() == [_ids(job, "job.failed")]
    assert fakes.hooks() == []


async def test_a_redelivery_announces_again_with_the_same_ids_and_writes_nothing(
    fakes: Fakes,
) -> None:
    job = await fakes.accepted(webhook_url=HOOK.url)
    done = lifecycle.completed(job, JobResultSummary(page_count=1, pages_extracted=1))
    await lifecycle.end(fakes.ctx, done, HOOK)
    writes = fakes.record_writes(job)

    await lifecycle.announce_again(fakes.ctx, done, HOOK)

    assert fakes.record_writes(job) == writes
    assert fakes.events() == [_ids(job, "job.completed")] * 2
    assert fakes.hooks() == [_ids(job, "job.completed")] * 2
    assert _count(fakes.ctx, "jobs", state="completed", door="http") == 1  # counted once


async def test_a_cancel_at_the_ingress_is_an_event_and_the_webhook_comes_with_the_task(
    fakes: Fakes,
) -> None:
    job = await fakes.accepted(webhook_url=HOOK.url)
    _, rev = await fakes.ctx.jobs.get_revision(job.job_id, job.tenant)
    cancelled = await lifecycle.cancel_queued(fakes.ctx, job, rev)
    assert cancelled.status is JobStatus.CANCELLED
    assert fakes.events() == [_ids(job, "job.cancelled")]
    assert fakes.hooks() == []  # the ingress has no token: the extract handler announces it

    await lifecycle.announce_again(fakes.ctx, cancelled, HOOK)  # the handler meets the task
    assert fakes.events() == [_ids(job, "job.cancelled")] * 2
    assert fakes.hooks() == [_ids(job, "job.cancelled")]


async def test_a_dead_lettered_job_fails_once_and_a_second_copy_only_re_announces(
    fakes: Fakes,
) -> None:
    job = await fakes.accepted(webhook_url=HOOK.url)
    await lifecycle.dead_letter(fakes.ctx, job, HOOK)

    stored = await fakes.ctx.jobs.get(job.job_id, "acme")
    assert stored.status is JobStatus.FAILED
    assert stored.error is not None
    assert stored.error.code == ErrorCode.EXTRACTION_CRASHED
    assert fakes.events() == [_ids(job, "job.failed")]
    assert fakes.hooks() == [_ids(job, "job.failed")]
    extract = fakes.ctx.topology.extract
    assert _count(fakes.ctx, "dead_letters", queue=extract) == 1

    writes = fakes.record_writes(job)
    await lifecycle.dead_letter(fakes.ctx, stored, HOOK)  # a second dead copy of the task
    assert fakes.record_writes(job) == writes
    assert _count(fakes.ctx, "dead_letters", queue=extract) == 1
    assert fakes.events() == [_ids(job, "job.failed")] * 2
    assert fakes.hooks() == [_ids(job, "job.failed")] * 2


async def test_a_broker_request_gets_one_reply_and_a_vanished_reply_queue_is_no_failure(
    fakes: Fakes,
) -> None:
    job = await fakes.accepted(door="broker", reply_to="amq.gen-asker", correlation_id="c-1")
    done = lifecycle.completed(job, JobResultSummary(page_count=1, pages_extracted=1))
    await lifecycle.end(fakes.ctx, done, None)
    [reply] = fakes.broker.to("")
    assert (reply.routing_key, reply.message_id) == (
        "amq.gen-asker",
        event_id(job.job_id, "job.completed"),
    )
    assert reply.properties.get("correlation_id") == "c-1"
    assert reply.json()["type"] == "job.completed"

    fakes.broker.unroutable.add("amq.gen-asker")
    await lifecycle.announce_again(fakes.ctx, done, None)
    assert fakes.events() == [_ids(job, "job.completed")] * 2
    assert len(fakes.broker.to("")) == 1


async def test_an_object_drop_ending_queues_its_outbox_as_the_jobs_target(fakes: Fakes) -> None:
    job = await fakes.accepted(
        door="object-drop", source_key="inbox/report.pdf", target=JobTarget(kind="outbox")
    )
    await lifecycle.end(fakes.ctx, lifecycle.failed(job, ErrorCode.NOT_A_PDF, "no"), None)
    # Not written while ending: the targets handler writes it (then `job.delivered`).
    assert outbox_key("inbox/report.pdf", ".error.json") not in fakes.store.names()
    (task,) = fakes.broker.to(fakes.ctx.topology.tasks)
    assert task.routing_key == fakes.ctx.topology.DELIVER_KEY
    assert fakes.events() == [_ids(job, "job.failed")]


async def test_an_object_drop_job_of_the_version_before_gets_its_outbox_as_it_ends(
    fakes: Fakes,
) -> None:
    # Accepted before the outbox was a target (no target in the record): written through the
    # door table before the event, as then.
    job = await fakes.accepted(door="object-drop", source_key="inbox/report.pdf")
    await lifecycle.end(fakes.ctx, lifecycle.failed(job, ErrorCode.NOT_A_PDF, "no"), None)
    assert outbox_key("inbox/report.pdf", ".error.json") in fakes.store.names()
    assert fakes.broker.to(fakes.ctx.topology.tasks) == []
    assert fakes.events() == [_ids(job, "job.failed")]


async def test_every_ending_publishes_only_to_the_events_webhooks_and_reply_exchanges(
    fakes: Fakes,
) -> None:
    for ending in ("completed", "failed", "cancelled"):
        job = await fakes.accepted(webhook_url=HOOK.url)
        await lifecycle.end(fakes.ctx, _ended(job, ending), HOOK)
    topo = fakes.ctx.topology
    where = Counter((p.exchange, p.routing_key) for p in fakes.broker.published)
    assert where == Counter(
        {
            (topo.events, "job.completed"): 1,
            (topo.events, "job.failed"): 1,
            (topo.events, "job.cancelled"): 1,
            (topo.webhooks_exchange, topo.webhooks): 3,
        }
    )


async def test_progress_is_events_at_the_workers_pace_and_a_throttled_record_write(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "RECORD_INTERVAL_S", 3600.0)  # no second write, however slow
    accepted = await fakes.accepted()
    _, rev = await fakes.ctx.jobs.get_revision(accepted.job_id, accepted.tenant)
    job = lifecycle.started(accepted, attempts=1)
    reporter = ProgressReporter(fakes.ctx, job, rev)
    reporter.start(job)
    for done in (1, 2, 3):
        reporter.update(done, 3)
        await reporter.flush()
    kinds = [kind for kind, _ in fakes.events()]
    assert kinds == ["job.progress"] * 3
    assert [m for _, m in fakes.events()] == [None] * 3  # superseded, never de-duplicated
    # accepted; then `processing` with its first progress; the rest within RECORD_INTERVAL_S
    assert fakes.record_writes(job) == 2
    stored = await fakes.ctx.jobs.get(job.job_id, "acme")
    assert stored.status is JobStatus.PROCESSING

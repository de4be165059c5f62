"""The llm methods' job steps on the in-memory store and broker (no model, no RabbitMQ): pages
into parts, the budget of failed calls, the merge's one ending, the template asked for once.
The real thing, with a fake model endpoint: tests/integration/test_llm.py."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shared.adapters.llm import ModelClient, Transcription
from shared.errors import ErrorCode, PermanentError, TransientError
from shared.jobs import lifecycle, llm
from shared.jobs.records import record_key, result_key
from shared.models import (
    ExtractionResult,
    ExtractOptions,
    Job,
    JobStatus,
    LlmTask,
    PageText,
    WebhookSpec,
    new_job_id,
)
from shared.runtime.context import Context
from shared.settings import Settings
from tests.fakes import InMemoryBroker, InMemoryStore, fake_context


class FakeClient:
    """What the handler needs of ModelClient: answers, or raises, on command."""

    model = "m"
    prompt = "p"

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.calls = 0

    async def transcribe(self, png: bytes) -> Transcription:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return Transcription(text=f"# {png.decode()}", tokens_in=10, tokens_out=2)


async def _job(
    pages: int, options: ExtractOptions | None = None, budget: int = 2
) -> tuple[Context, InMemoryStore, InMemoryBroker, Job, list[LlmTask]]:
    store, broker = InMemoryStore(), InMemoryBroker()
    ctx = fake_context(store, broker, settings=Settings(llm_retry_budget=budget))
    job = Job(job_id=new_job_id(), tenant="acme", options=options or ExtractOptions(method="llm"))
    await lifecycle.accept(ctx, job)
    job = lifecycle.started(job, attempts=1)
    await ctx.jobs.save(job)
    plan = llm.LlmPlan(
        pages=tuple(range(1, pages + 1)), page_count=pages, pages_extracted=pages, text_output=False
    )
    await store.put_bytes(llm.plan_key(job.job_id), plan.model_dump_json().encode())
    base = ExtractionResult(page_count=pages, pages=[PageText(number=1, text="native")])
    await store.put_bytes(llm.base_key(job.job_id), base.model_dump_json().encode())
    tasks = []
    for n in range(1, pages + 1):
        await store.put_bytes(llm.image_key(job.job_id, n), f"page {n}".encode(), "image/png")
        tasks.append(
            LlmTask(
                job_id=job.job_id,
                tenant=job.tenant,
                pages=pages,
                page=n,
                image_key=llm.image_key(job.job_id, n),
                image_sha256=f"{n:064x}",
            )
        )
    return ctx, store, broker, job, tasks


def _steps(ctx: Context, broker: InMemoryBroker) -> list[tuple[str, str]]:
    return [
        (p.routing_key, LlmTask.model_validate_json(p.body).step)
        for p in broker.to(ctx.topology.tasks)
    ]


async def _page(ctx: Context, client: FakeClient, task: LlmTask, failures: int = 0) -> None:
    calls = llm.InFlightCalls()
    await llm.handle_page(ctx, cast(ModelClient, client), calls, task, failures)


async def test_pages_become_parts_and_the_last_asks_for_the_merge_once_merged() -> None:
    ctx, store, broker, job, tasks = await _job(3)
    client = FakeClient()
    for task in reversed(tasks):  # in any order
        await _page(ctx, client, task)
    assert client.calls == 3
    topo = ctx.topology
    assert [s for s in _steps(ctx, broker) if s[1] == "merge"] == [(topo.LLM_MERGE_KEY, "merge")]
    merge = LlmTask.model_validate_json(broker.to(topo.tasks)[-1].body)
    await llm.handle_merge(ctx, merge)
    await llm.handle_merge(ctx, merge)  # a second merge only announces again
    ended = await ctx.jobs.get(job.job_id, job.tenant)
    assert ended.status is JobStatus.COMPLETED
    assert ended.llm is not None
    assert (ended.llm.calls, ended.llm.tokens_in) == (3, 30)
    assert store.requests.count(("put", record_key(job.tenant, job.job_id))) == 3  # once ended
    result = ExtractionResult.model_validate_json(await store.get_bytes(result_key(job.job_id)))
    assert [(p.number, p.text, p.llm) for p in result.pages] == [
        (n, f"# page {n}", f"# page {n}") for n in (1, 2, 3)
    ]
    assert not [k for k in store.names() if k.startswith(llm.llm_prefix(job.job_id))]


async def test_the_same_page_image_is_answered_from_the_cache() -> None:
    ctx, _store, _broker, _j, tasks = await _job(2)
    client = FakeClient()
    same = tasks[1].model_copy(update={"image_sha256": tasks[0].image_sha256})
    await _page(ctx, client, tasks[0])
    await _page(ctx, client, same)
    assert client.calls == 1


async def test_failed_calls_retry_within_the_budget_then_fail_the_job() -> None:
    ctx, _store, broker, job, tasks = await _job(1, budget=2)
    client = FakeClient(TransientError("503", ErrorCode.LLM_UNAVAILABLE))
    for failures in (0, 1):
        with pytest.raises(TransientError):
            await _page(ctx, client, tasks[0], failures)
    await _page(ctx, client, tasks[0], 2)
    [(key, step)] = _steps(ctx, broker)
    assert (key, step) == (ctx.topology.LLM_MERGE_KEY, "failed")
    failed = LlmTask.model_validate_json(broker.to(ctx.topology.tasks)[0].body)
    assert failed.error is not None
    assert failed.error.code == "LLM_UNAVAILABLE"
    assert failed.error.message.startswith("page 1 after 3 tries")
    await llm.handle_merge(ctx, failed)
    ended = await ctx.jobs.get(job.job_id, job.tenant)
    assert ended.status is JobStatus.FAILED
    assert ended.error is not None
    assert ended.error.code == "LLM_UNAVAILABLE"


async def test_a_refusal_fails_the_job_at_once() -> None:
    ctx, _store, broker, _j, tasks = await _job(1)
    client = FakeClient(PermanentError("no", ErrorCode.LLM_REFUSED))
    await _page(ctx, client, tasks[0])
    failed = LlmTask.model_validate_json(broker.to(ctx.topology.tasks)[0].body)
    assert (failed.step, failed.error and failed.error.code) == ("failed", "LLM_REFUSED")


async def test_a_template_is_asked_for_once_however_many_merges_come() -> None:
    options = ExtractOptions(method="llm", template="Notiz")
    ctx, _store, broker, _j, tasks = await _job(1, options)
    await _page(ctx, FakeClient(), tasks[0])
    merge = tasks[0].model_copy(update={"step": "merge"})
    await llm.handle_merge(ctx, merge)
    await llm.handle_merge(ctx, merge)
    steps: list[Any] = _steps(ctx, broker)
    assert steps.count((ctx.topology.LLM_KEY, "transform")) == 1


async def test_the_record_counts_the_pages_and_progress_webhooks_go_when_asked() -> None:
    ctx, _store, broker, job, tasks = await _job(3)
    hook = WebhookSpec(url="https://client.example/hook", progress=True)
    client = FakeClient()
    for task in tasks:
        await _page(ctx, client, task.model_copy(update={"webhook": hook}))
    progress = [
        LlmTask.model_validate_json(p.body)
        for p in broker.to(ctx.topology.tasks)
        if LlmTask.model_validate_json(p.body).step == "progress"
    ]
    assert [p.done for p in progress] == [1, 2]  # the last page's part asks for the merge
    for step in progress:
        await llm.handle_merge(ctx, step)
    assert (await ctx.jobs.get(job.job_id, job.tenant)).progress.pages_done == 2
    sent = broker.deliveries(ctx.topology.webhooks_exchange)
    assert [d.event_type for d in sent] == ["job.progress", "job.progress"]

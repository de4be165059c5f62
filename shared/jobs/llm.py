"""The vision model's part of a job (README "LLM methods"), after the extraction workers
rendered its pages (shared/jobs/llm_dispatch.py): each page on `pdfrelay.llm` becomes a part,
answered from the per-page cache or by one model call; when every part is there, the merge
queue (one active consumer) puts them into the result in page order and completes the job,
once. A page that fails, and a cancel, end the job through the same queue."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shared.adapters.llm import ModelClient, Transcription
from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, JobCancelled, PermanentError, TransientError
from shared.jobs import lifecycle
from shared.jobs.cancel import raise_if_requested
from shared.jobs.llm_usage import charge
from shared.jobs.outcome import ProgressWebhooks, publish_event
from shared.jobs.records import artifact_key, result_key
from shared.models import (
    Artifact,
    ExtractionResult,
    Frozen,
    Job,
    JobError,
    JobResultSummary,
    LlmStep,
    LlmTask,
    LlmUsage,
    PageText,
    Progress,
)
from shared.runtime.context import Context

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_PREFIX = "results/llm-c/"
PROGRESS_WRITES = 20
"""A job's record is rewritten with its pages done about this many times at most."""


def llm_prefix(job_id: str) -> str:
    return f"results/{job_id}/llm/"


def image_key(job_id: str, page: int) -> str:
    return f"{llm_prefix(job_id)}page-{page:05d}.png"


def parts_prefix(job_id: str) -> str:
    return f"{llm_prefix(job_id)}part-"


def part_key(job_id: str, page: int) -> str:
    return f"{parts_prefix(job_id)}{page:05d}.json"


def plan_key(job_id: str) -> str:
    return f"{llm_prefix(job_id)}plan.json"


def transform_asked_key(job_id: str) -> str:
    """Written by the merge queue's consumer when it asks for the template's step: once."""
    return f"{llm_prefix(job_id)}transform-asked"


def transformed_key(job_id: str) -> str:
    """The template's answer (`LlmTransformed`), until the merge stores `transformed.md`."""
    return f"{llm_prefix(job_id)}transformed.json"


def base_key(job_id: str) -> str:
    """The extraction's own result (native or OCR text, metadata…), before the model's pages."""
    return f"{llm_prefix(job_id)}base.json"


def cache_key(tenant: str, image_sha256: str, model: str, prompt: str) -> str:
    """The per-page cache entry: page image content, model and prompt (and the tenant: a shared
    entry would tell one tenant that another has had the same page)."""
    material = json.dumps([tenant, image_sha256.lower(), model, prompt], separators=(",", ":"))
    return f"{CACHE_PREFIX}{hashlib.sha256(material.encode()).hexdigest()}.json"


class LlmPlan(Frozen):
    """What the merge needs besides the parts: the extraction's summary and the pages sent."""

    pages: tuple[int, ...]
    page_count: int
    pages_extracted: int
    warnings: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    text_output: bool
    """`text` was asked for too: it keeps the extraction's text, the model's goes to `llm`."""


class LlmAnswer(Frozen):
    """One page's transcription: a part of the job, and the cache entry of its page."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0


class LlmPart(LlmAnswer):
    page: int
    cached: bool = False


class LlmTransformed(LlmAnswer):
    cached: bool = False
    cut: bool = False
    """The document's text was longer than a template takes: only its first pages went."""


TRANSFORMED_ARTIFACT = "transformed.md"


class InFlightCalls:
    """The model calls this process is making, by job: a cancel request stops them."""

    def __init__(self) -> None:
        self._calls: dict[str, set[asyncio.Future[Any]]] = {}
        self._stopped: set[str] = set()

    def cancel(self, job_id: str) -> None:
        """Stop the job's calls in flight (`run` raises JobCancelled in their handlers)."""
        calls = self._calls.get(job_id)
        if calls:
            self._stopped.add(job_id)
            for call in calls:
                call.cancel()

    async def run(self, job_id: str, work: Coroutine[Any, Any, T]) -> T:
        call: asyncio.Future[T] = asyncio.ensure_future(work)
        self._calls.setdefault(job_id, set()).add(call)
        try:
            return await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if job_id in self._stopped and current is not None and not current.cancelling():
                raise JobCancelled("the job was cancelled") from None
            raise
        finally:
            calls = self._calls[job_id]
            calls.discard(call)
            if not calls:
                del self._calls[job_id]
                self._stopped.discard(job_id)


async def start(ctx: Context, client: ModelClient | None, task: LlmTask) -> Job | None:
    """The job of a page or transform task, if the task is still to run (else: the job has
    ended, or its cancel or a missing endpoint ends it now, through the merge queue)."""
    job = await ctx.jobs.get(task.job_id, task.tenant)
    if job.status.terminal:
        return None  # cancelled, or failed by another page: the rest of the work is skipped
    try:
        await raise_if_requested(ctx, job)
    except JobCancelled:
        await publish_step(ctx, task, "cancelled")
        return None
    if client is None:
        error = JobError(
            code=ErrorCode.LLM_NOT_CONFIGURED,
            message="this llm handler has no model endpoint (PDFRELAY_LLM_BASE_URL)",
        )
        await publish_step(ctx, task, "failed", error)
        return None
    return job


async def guarded(
    ctx: Context,
    calls: InFlightCalls,
    task: LlmTask,
    failures: int,
    work: Coroutine[Any, Any, T],
) -> T | None:
    """`work` (a model call of the task's job); None when it ended the job (cancelled, refused,
    failed past the budget: published to the merge queue).

    Raises:
        TransientError: the call failed and the budget allows another try.
    """
    try:
        return await calls.run(task.job_id, work)
    except JobCancelled:
        await publish_step(ctx, task, "cancelled")
    except PermanentError as exc:
        ctx.metrics.llm_calls.labels(outcome="refused").inc()
        await publish_step(ctx, task, "failed", _step_error(task, exc))
    except TransientError as exc:
        if exc.code is not ErrorCode.LLM_UNAVAILABLE:
            raise  # storage or broker away: the consumer's own ladder
        ctx.metrics.llm_calls.labels(outcome="failed").inc()
        if failures + 1 <= ctx.settings.llm_retry_budget:
            raise
        await publish_step(ctx, task, "failed", _step_error(task, exc, failures + 1))
    return None


async def handle_page(
    ctx: Context,
    client: ModelClient | None,
    calls: InFlightCalls,
    task: LlmTask,
    failures: int,
) -> None:
    """Transcribe one page into its part; `failures`: this page's failed calls so far.

    Raises:
        TransientError: the call failed and the page's budget allows another try.
    """
    page, _, _ = _page_of(task)
    job = await start(ctx, client, task)
    if job is None or client is None:
        return
    part = await guarded(ctx, calls, task, failures, _part(ctx, client, task))
    if part is None:
        return
    await ctx.storage.put_bytes(
        part_key(job.job_id, page), part.model_dump_json().encode(), "application/json"
    )
    done = len(await ctx.storage.list_keys(parts_prefix(job.job_id)))
    progress = Progress(pages_done=min(done, task.pages), pages_total=task.pages)
    await publish_event(ctx, job.model_copy(update={"progress": progress}), "job.progress")
    if done < task.pages and done % max(1, task.pages // PROGRESS_WRITES) == 0:
        # The record is written by the merge queue's one consumer, which also writes the
        # job's ending: a progress write can never land after it.
        await publish_step(ctx, task.model_copy(update={"done": done}), "progress")
    if done >= task.pages:
        # Two last pages may both get here: the merge queue's one consumer and its checks make
        # the second a no-op.
        await publish_step(ctx, task, "merge")


def _page_of(task: LlmTask) -> tuple[int, str, str]:
    """(page, image key, image sha256) of a page task (PermanentError for one without)."""
    if task.page is None or task.image_key is None or task.image_sha256 is None:
        raise PermanentError("a page task without its page image", ErrorCode.INVALID_REQUEST)
    return task.page, task.image_key, task.image_sha256


def _step_error(task: LlmTask, exc: PermanentError | TransientError, tries: int = 1) -> JobError:
    after = f" after {tries} tries" if tries > 1 else ""
    where = f"page {task.page}" if task.step == "page" else "the template"
    return JobError(code=exc.code, message=f"{where}{after}: {exc.message}")


async def _part(ctx: Context, client: ModelClient, task: LlmTask) -> LlmPart:
    """The page's part: from the cache, or one call of the model (then cached)."""
    page, image, digest = _page_of(task)

    async def transcribe() -> Transcription:
        return await client.transcribe(await ctx.storage.get_bytes(image))

    key = cache_key(task.tenant, digest, client.model, client.prompt)
    answer, cached = await cached_answer(ctx, key, transcribe)
    return LlmPart(page=page, cached=cached, **answer.model_dump())


async def cached_answer(
    ctx: Context, key: str, call: Callable[[], Awaitable[Transcription]]
) -> tuple[LlmAnswer, bool]:
    """The model's answer stored under the cache `key`, else one `call` of the model (counted,
    then stored); and whether it came from the cache (then it costs no tokens)."""
    try:
        found = LlmAnswer.model_validate_json(await ctx.storage.get_bytes(key))
    except ObjectNotFound:
        pass
    else:
        ctx.metrics.llm_calls.labels(outcome="cached").inc()
        return LlmAnswer(text=found.text), True
    made = await call()
    ctx.metrics.llm_calls.labels(outcome="ok").inc()
    ctx.metrics.llm_tokens.labels(direction="in").inc(made.tokens_in)
    ctx.metrics.llm_tokens.labels(direction="out").inc(made.tokens_out)
    fresh = LlmAnswer(text=made.text, tokens_in=made.tokens_in, tokens_out=made.tokens_out)
    await ctx.storage.put_bytes(key, fresh.model_dump_json().encode(), "application/json")
    return fresh, False


async def publish_step(
    ctx: Context, task: LlmTask, step: LlmStep, error: JobError | None = None
) -> None:
    """The job's next step: a transform on `pdfrelay.llm`, the rest on the merge queue."""
    msg = task.model_copy(
        update={"step": step, "error": error, "page": None, "image_key": None}
        if step != "page"
        else {}
    )
    topology = ctx.topology
    key = topology.LLM_KEY if step in ("page", "transform") else topology.LLM_MERGE_KEY
    suffix = f"{step}.{task.done}" if step == "progress" else step
    await ctx.broker.publish(topology.tasks, key, msg, message_id=f"{task.job_id}.llm.{suffix}")


async def handle_merge(ctx: Context, task: LlmTask) -> None:
    """End the job as `task.step` says: merged (completed), failed or cancelled; once. A job
    with a template has its transform step asked for first (it merges again after it)."""
    job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    if task.step == "progress":
        if not job.status.terminal and (task.done or 0) > job.progress.pages_done:
            progress = Progress(pages_done=task.done or 0, pages_total=task.pages)
            job = job.model_copy(update={"progress": progress})
            try:
                await lifecycle.save_progress(ctx, job, rev)
            except JobCancelled:
                return  # ended meanwhile: whoever ended it announces it
            await ProgressWebhooks(ctx, task.webhook).send(job)  # when the client asked
        return
    if job.status.terminal:
        await lifecycle.announce_again(ctx, job, task.webhook)
        return

    async def clean_up() -> None:
        for key in await ctx.storage.list_keys(llm_prefix(job.job_id)):
            await ctx.storage.delete(key)

    parts = await read_parts(ctx, job.job_id)
    transformed = await _transformed(ctx, job)
    if task.step == "merge" and job.options.template is not None and transformed is None:
        await _ask_for_transform(ctx, task)
        return
    if task.step == "cancelled":
        ended = lifecycle.cancelled(job)
    elif task.step == "failed":
        error = task.error or JobError(code=ErrorCode.LLM_UNAVAILABLE, message="a page failed")
        ended = lifecycle.failed(job, error.code, error.message)
    else:
        ended = await _merged(ctx, job, parts, transformed)
    answers: list[LlmPart | LlmTransformed] = [*parts.values()]
    if transformed is not None:
        answers.append(transformed)
    usage = LlmUsage(
        calls=sum(1 for a in answers if not a.cached),
        cached_pages=sum(1 for p in parts.values() if p.cached),
        tokens_in=sum(a.tokens_in for a in answers),
        tokens_out=sum(a.tokens_out for a in answers),
    )
    ended = ended.model_copy(update={"llm": usage})
    if ctx.settings.llm_tenant_monthly_tokens is not None:
        await charge(ctx, job.tenant, usage)
    log.info(
        "job %s: %d pages from the model (%d calls, %d cached; tokens %d in, %d out)",
        job.job_id,
        len(parts),
        usage.calls,
        usage.cached_pages,
        usage.tokens_in,
        usage.tokens_out,
    )
    # Over the version read: a cancel meanwhile stands.
    await lifecycle.end(
        ctx, ended, task.webhook, rev=rev, first=False, note=" (llm)", stored=clean_up
    )


async def _ask_for_transform(ctx: Context, task: LlmTask) -> None:
    """The pages are all there: the template's step, once (a second merge of the pages finds
    it asked; this queue's one consumer makes the check and the mark one step)."""
    marker = transform_asked_key(task.job_id)
    try:
        await ctx.storage.stat(marker)
    except ObjectNotFound:
        await ctx.storage.put_bytes(marker, b"", "text/plain")
        await publish_step(ctx, task, "transform")


async def _transformed(ctx: Context, job: Job) -> LlmTransformed | None:
    if job.options.template is None:
        return None
    try:
        raw = await ctx.storage.get_bytes(transformed_key(job.job_id))
    except ObjectNotFound:
        return None
    return LlmTransformed.model_validate_json(raw)


async def read_parts(ctx: Context, job_id: str) -> dict[int, LlmPart]:
    parts: dict[int, LlmPart] = {}
    for key in await ctx.storage.list_keys(parts_prefix(job_id)):
        part = LlmPart.model_validate_json(await ctx.storage.get_bytes(key))
        parts[part.page] = part
    return parts


async def read_plan(ctx: Context, job_id: str) -> LlmPlan:
    return LlmPlan.model_validate_json(await ctx.storage.get_bytes(plan_key(job_id)))


async def combined(
    ctx: Context, job: Job, plan: LlmPlan, parts: dict[int, LlmPart]
) -> ExtractionResult:
    """The extraction's result with the model's pages in it (an ExtractionResult)."""
    missing = [n for n in plan.pages if n not in parts]
    if missing:
        raise TransientError(f"pages {missing[:5]} have no part yet")
    raw = await ctx.storage.get_bytes(base_key(job.job_id))
    return await asyncio.to_thread(combine, raw, plan, parts, job.job_id)


async def _merged(
    ctx: Context, job: Job, parts: dict[int, LlmPart], transformed: LlmTransformed | None
) -> Job:
    """The job completed: the model's pages put into the extraction's result, in page order,
    and the template's answer as `transformed.md`."""
    plan = await read_plan(ctx, job.job_id)
    result = await combined(ctx, job, plan, parts)
    artifacts = list(plan.artifacts)
    warnings = list(plan.warnings)
    if job.options.template is not None:
        if transformed is None:
            raise TransientError("the template's answer is not there yet")
        result.transformed = transformed.text
        data = transformed.text.encode()
        await ctx.storage.put_bytes(
            artifact_key(job.job_id, TRANSFORMED_ARTIFACT), data, "text/markdown; charset=utf-8"
        )
        artifacts.append(
            Artifact(
                name=TRANSFORMED_ARTIFACT,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                content_type="text/markdown; charset=utf-8",
            )
        )
        if transformed.cut:
            note = "the template was given the document's first pages only (text too long)"
            result.warnings.append(note)
            warnings.append(note)
    dumped = await asyncio.to_thread(result.model_dump_json, by_alias=True)
    await ctx.storage.put_bytes(result_key(job.job_id), dumped.encode(), "application/json")
    summary = JobResultSummary(
        page_count=plan.page_count,
        pages_extracted=plan.pages_extracted,
        artifacts=tuple(artifacts),
        warnings=tuple(warnings),
    )
    return lifecycle.completed(job.model_copy(update={"result_key": None}), summary)


def combine(raw: bytes, plan: LlmPlan, parts: dict[int, LlmPart], job_id: str) -> ExtractionResult:
    """The result with the model's pages (CPU work: run in a thread)."""
    result = ExtractionResult.model_validate_json(raw)
    result.job_id = job_id
    if plan.text_output or not plan.pages:
        result.pages = [
            p.model_copy(update={"llm": parts[p.number].text}) if p.number in parts else p
            for p in result.pages
        ]
    else:
        result.pages = [
            PageText(number=n, text=parts[n].text, llm=parts[n].text) for n in sorted(parts)
        ]
    return result


async def handle_dead(ctx: Context, task: LlmTask) -> None:
    """A task the llm queues gave up on: a page's job fails (through the merge queue); a merge
    that kept failing ends its job here; a lost progress write is only logged."""
    if task.step == "progress":
        log.warning("job %s: a progress write was given up on", task.job_id)
        return
    if task.step in ("page", "transform"):
        where = f"page {task.page}" if task.step == "page" else "the template"
        error = JobError(
            code=ErrorCode.LLM_UNAVAILABLE, message=f"{where}: the llm step gave up on it"
        )
        await publish_step(ctx, task, "failed", error)
        return
    job = await ctx.jobs.get(task.job_id, task.tenant)
    if job.status.terminal:
        await lifecycle.announce_again(ctx, job, task.webhook)
        return
    error = task.error or JobError(
        code=ErrorCode.INTERNAL, message="merging the model's pages failed on every attempt"
    )
    await lifecycle.end(ctx, lifecycle.failed(job, error.code, error.message), task.webhook)

"""Handing a job's rendered pages to the vision model (extract process): the extraction's
result and artifacts are stored, each page image goes to S3 and its task to `pdfrelay.llm`;
the job stays `processing` until the merge (shared/jobs/llm.py) ends it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from shared.adapters.digests import file_digest
from shared.errors import ErrorCode, PermanentError
from shared.extraction.base import ArtifactFile
from shared.extraction.modelpages import model_page_number
from shared.jobs import lifecycle
from shared.jobs.llm import LlmPlan, base_key, image_key, plan_key, publish_step
from shared.jobs.records import Revision, artifact_key
from shared.models import LLM_OUTPUT, Artifact, Job, LlmTask, Progress, WebhookSpec
from shared.runtime.context import Context

T = TypeVar("T")
IN_FLIGHT = 8
"""Page images uploaded, and page tasks published, at once."""


def wants_model(job: Job) -> bool:
    """The job has model work after its extraction: pages to transcribe, or a template."""
    return LLM_OUTPUT in job.options.outputs or job.options.template is not None


async def dispatch(
    ctx: Context,
    job: Job,
    rev: Revision,
    webhook: WebhookSpec | None,
    *,
    result_path: str,
    artifacts: Sequence[ArtifactFile],
    digests: Mapping[str, tuple[int, str]],
    page_count: int,
    pages_extracted: int,
    warnings: Sequence[str],
) -> None:
    """Store what the worker made and queue one model task per rendered page."""
    pages: list[tuple[int, ArtifactFile]] = []
    stored: list[Artifact] = []
    for art in artifacts:
        number = model_page_number(art.name)
        if number is not None:
            pages.append((number, art))
            continue
        await ctx.storage.put_file(artifact_key(job.job_id, art.name), art.path, art.content_type)
        size, digest = await _digest(digests, art.path)
        stored.append(
            Artifact(name=art.name, size=size, sha256=digest, content_type=art.content_type)
        )
    if not pages and LLM_OUTPUT in job.options.outputs:
        raise PermanentError(
            "no page of the document could be rendered for the model", ErrorCode.PDF_DAMAGED
        )
    pages.sort()
    plan = LlmPlan(
        pages=tuple(n for n, _ in pages),
        page_count=page_count,
        pages_extracted=pages_extracted,
        warnings=tuple(warnings),
        artifacts=tuple(stored),
        text_output="text" in job.options.outputs,
    )
    await ctx.storage.put_file(base_key(job.job_id), result_path, "application/json")
    await ctx.storage.put_bytes(
        plan_key(job.job_id), plan.model_dump_json().encode(), "application/json"
    )

    async def page_task(number: int, art: ArtifactFile) -> LlmTask:
        await ctx.storage.put_file(image_key(job.job_id, number), art.path, "image/png")
        _, digest = await _digest(digests, art.path)
        return LlmTask(
            job_id=job.job_id,
            tenant=job.tenant,
            webhook=webhook,
            pages=len(pages),
            page=number,
            image_key=image_key(job.job_id, number),
            image_sha256=digest,
        )

    tasks = await _bounded([page_task(n, art) for n, art in pages])
    progress = Progress(pages_done=0, pages_total=len(pages))
    await lifecycle.save_progress(ctx, job.model_copy(update={"progress": progress}), rev)
    if not tasks:  # only a template: the merge queue asks for its step at once
        only = LlmTask(job_id=job.job_id, tenant=job.tenant, webhook=webhook, pages=0)
        await publish_step(ctx, only, "merge")
    await _bounded(
        [
            ctx.broker.publish(
                ctx.topology.tasks,
                ctx.topology.LLM_KEY,
                task,
                message_id=f"{job.job_id}.llm.{task.page}",
            )
            for task in tasks
        ]
    )


async def _bounded(work: list[Coroutine[Any, Any, T]], limit: int = IN_FLIGHT) -> list[T]:
    """Run `work` with at most `limit` at once (uploads, confirmed publishes); in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await item

    running = [asyncio.ensure_future(one(w)) for w in work]
    try:
        return list(await asyncio.gather(*running))
    except BaseException:
        # The first failure is the answer (TransientError: the task is retried): the rest stop.
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise


async def _digest(digests: Mapping[str, tuple[int, str]], path: str) -> tuple[int, str]:
    """(size, sha256) of an artifact: the worker's, else taken here (off the event loop)."""
    known = digests.get(path)
    return known if known is not None else await asyncio.to_thread(file_digest, path)

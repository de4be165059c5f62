"""The `template` step (on `pdfrelay.llm`, after the pages): the document's text, the model's
Markdown where a page has it, transformed by the named template filled from `context`; the
answer is cached by model, filled template and text, and the merge stores it as
`transformed.md`."""

from __future__ import annotations

import asyncio
import hashlib
import json

from shared.adapters.llm import ModelClient
from shared.errors import PermanentError
from shared.jobs.llm import (
    CACHE_PREFIX,
    InFlightCalls,
    LlmTransformed,
    cached_answer,
    combined,
    guarded,
    publish_step,
    read_parts,
    read_plan,
    start,
    transformed_key,
)
from shared.jobs.llm_templates import MAX_TEXT_CHARS, fill, load_template
from shared.models import ExtractionResult, JobError, LlmTask
from shared.runtime.context import Context


def document_text(result: ExtractionResult) -> tuple[str, bool]:
    """The pages' text for a template (the model's Markdown where there is one), joined with
    the Secretary's page markers; cut at a page past MAX_TEXT_CHARS (then True)."""
    parts: list[str] = []
    used = 0
    for page in result.pages:
        text = page.llm if page.llm is not None else page.text
        chunk = f"\n--- Seite {page.number} ---\n{text}"
        if parts and used + len(chunk) > MAX_TEXT_CHARS:
            return "".join(parts), True
        parts.append(chunk[:MAX_TEXT_CHARS])
        used += len(chunk)
    if not parts and result.markdown:
        return result.markdown[:MAX_TEXT_CHARS], len(result.markdown) > MAX_TEXT_CHARS
    return "".join(parts), False


def cache_key(tenant: str, model: str, system: str | None, user: str) -> str:
    digest = hashlib.sha256(
        json.dumps(["template", tenant, model, system, user]).encode()
    ).hexdigest()
    return f"{CACHE_PREFIX}t-{digest}.json"


async def handle_transform(
    ctx: Context,
    client: ModelClient | None,
    calls: InFlightCalls,
    task: LlmTask,
    failures: int,
) -> None:
    """Transform the job's text by its template; the merge follows.

    Raises:
        TransientError: the call failed and the budget allows another try.
    """
    job = await start(ctx, client, task)
    if job is None or client is None:
        return
    assert job.options.template is not None
    try:
        template = await load_template(ctx.settings, job.options.template)
    except PermanentError as exc:  # removed (or unset) since the job was accepted
        await publish_step(ctx, task, "failed", JobError(code=exc.code, message=exc.message))
        return
    plan = await read_plan(ctx, job.job_id)
    result = await combined(ctx, job, plan, await read_parts(ctx, job.job_id))
    text, cut = await asyncio.to_thread(document_text, result)
    system, user = fill(template, job.options.context, text)
    key = cache_key(job.tenant, client.model, system, user)

    async def answer() -> LlmTransformed:
        found, cached = await cached_answer(ctx, key, lambda: client.transform(system, user))
        return LlmTransformed(cached=cached, cut=cut, **found.model_dump())

    transformed = await guarded(ctx, calls, task, failures, answer())
    if transformed is None:
        return
    await ctx.storage.put_bytes(
        transformed_key(job.job_id), transformed.model_dump_json().encode(), "application/json"
    )
    await publish_step(ctx, task, "merge")

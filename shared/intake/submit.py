"""Turning a request from any door into a queued job: store, record, publish confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Literal

from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, JobNotFound, PermanentError, TransientError, WriteConflict
from shared.intake.fetch import check_source_url
from shared.jobs import lifecycle, llm_usage
from shared.jobs.llm_templates import load_template
from shared.jobs.quota import release, reserve
from shared.jobs.records import (
    RECORD_ETAG_HEADER,
    IdempotencyClaim,
    Revision,
    inflight_key,
    upload_key,
)
from shared.models import (
    LLM_OUTPUT,
    ExtractOptions,
    ExtractTask,
    Job,
    JobStatus,
    JobTarget,
    WebhookSpec,
    id_created_at,
    new_job_id,
    utcnow,
)
from shared.obs.logs import job_context
from shared.obs.tracing import current_traceparent
from shared.runtime.context import Context
from shared.settings import Settings
from shared.webhooks.ssrf import SsrfPolicy

log = logging.getLogger(__name__)

Door = Literal["http", "broker", "object-drop", "seed"]


@dataclass(frozen=True)
class Submission:
    tenant: str
    door: Door
    options: ExtractOptions
    spool_path: str | None = None
    """A local file to store as the job's upload; otherwise `s3_key` names the source."""
    s3_bucket: str | None = None
    s3_key: str | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    webhook: WebhookSpec | None = None
    client_ref: str | None = None
    filename: str | None = None
    idempotency_key: str | None = None
    job_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    batch_id: str | None = None
    target: JobTarget | None = None
    """Where the outputs go once the job ends (shared/intake/targets.py checked it)."""
    recover: bool = False
    """The request may repeat one whose submitter died midway (a redelivered message, a
    dropped object seen again): a job it finds still queued gets its task published again."""


class Submitter:
    """Serialises submissions that share an idempotency key within this process."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def submit(self, ctx: Context, sub: Submission) -> tuple[Job, bool]:
        """Queue the job; returns (job, created). An idempotency key seen before returns its job.

        Raises:
            QueueFullError, TransientError: nothing was accepted; the client should retry.
            PermanentError: LLM_NOT_CONFIGURED for an `llm` method without a model endpoint.
        """
        check_llm_configured(ctx.settings, sub.options)
        if sub.options.template is not None:
            await load_template(ctx.settings, sub.options.template)
        if LLM_OUTPUT in sub.options.outputs or sub.options.template is not None:
            await llm_usage.check_budget(ctx, sub.tenant)
        if sub.idempotency_key is None:
            return await _create(ctx, sub)
        # The broker's message ids live in a namespace of their own (never an HTTP key's job).
        key = f"broker:{sub.idempotency_key}" if sub.door == "broker" else sub.idempotency_key
        lock_key = f"{sub.tenant}\0{key}"
        lock = self._locks[lock_key]
        try:
            async with lock:
                return await _submit_once(ctx, sub, key)
        finally:
            # Outside `async with`: only now is the lock free when nobody else waits on it.
            if not lock.locked() and self._locks.get(lock_key) is lock:
                del self._locks[lock_key]

    def __len__(self) -> int:
        """Idempotency keys with a submission in progress (their locks)."""
        return len(self._locks)


async def _submit_once(ctx: Context, sub: Submission, key: str) -> tuple[Job, bool]:
    """One job per idempotency key, whichever process submits it and however often: the key
    is bound to the job's id first (`JobStore.claim_idempotent`), then the job is made under
    that id. A repeat finds the job; one whose first submitter died (or is still at work)
    before the record was stored makes it under the same id, and the record's own
    create-only write lets one of them store it."""
    digest = request_digest(sub)
    claim = IdempotencyClaim(job_id=sub.job_id or new_job_id(), request=digest)
    held = await ctx.jobs.claim_idempotent(sub.tenant, key, claim)
    if held is None:
        try:
            return await _create(ctx, replace(sub, job_id=claim.job_id))
        except BaseException:
            # Not made: a later try of the request is a job of its own time.
            with contextlib.suppress(TransientError):
                await ctx.jobs.release_idempotent(sub.tenant, key)
            raise
    if held.request is not None and held.request != digest:
        raise _mismatch()
    try:
        return await _existing(ctx, sub, held.job_id), False
    except JobNotFound:
        # Bound, never stored (its submitter died midway), or deleted after its retention
        # just before its key: made now, under the bound id.
        return await _create(ctx, replace(sub, job_id=held.job_id))


async def _existing(ctx: Context, sub: Submission, job_id: str) -> Job:
    """The job an idempotency key is bound to; a repeat of a request whose first submitter may
    have died between storing the record and publishing the task (`sub.recover`) publishes the
    task of a job still queued again (a second copy is harmless: a job ends once).

    Raises:
        JobNotFound: the job's record is not (or no longer) stored.
    """
    job, rev = await ctx.jobs.get_revision(job_id, sub.tenant)
    check_same_request(job, sub)
    if sub.recover and job.status is JobStatus.QUEUED:
        log.info("job %s found queued on a repeated request: its task is published again", job_id)
        await _publish_task(ctx, job, sub.webhook, rev)
    return job


def request_digest(sub: Submission) -> str:
    """What makes two submissions the same request: the source and the options."""
    if sub.spool_path is not None:
        source = f"sha256:{sub.sha256}"
    elif sub.url is not None:
        source = f"url:{sub.url}"
    else:
        source = f"s3:{sub.s3_bucket}/{sub.s3_key}"
    return hashlib.sha256(f"{source}\0{sub.options.model_dump_json()}".encode()).hexdigest()


def check_llm_configured(settings: Settings, options: ExtractOptions) -> None:
    """Raises PermanentError (LLM_NOT_CONFIGURED, 422) when `options` ask for a vision model's
    transcription (the `llm` methods) and no model endpoint is configured."""
    if LLM_OUTPUT in options.outputs and settings.llm_base_url is None:
        raise PermanentError(
            "the llm methods need a model endpoint, and none is configured: the operator sets "
            "PDFRELAY_LLM_BASE_URL (any OpenAI-compatible chat-completions API), with "
            "PDFRELAY_LLM_MODEL and PDFRELAY_LLM_API_KEY",
            ErrorCode.LLM_NOT_CONFIGURED,
        )


def check_same_request(job: Job, sub: Submission) -> None:
    """Raises PermanentError (IDEMPOTENCY_MISMATCH) when `sub` reuses the key of `job` for a
    different file, source or options."""
    if sub.spool_path is not None:
        same_source = job.source_sha256 == sub.sha256
    elif sub.url is not None:
        same_source = job.source_url == sub.url
    else:
        same_source = (job.source_key, job.source_bucket) == (sub.s3_key, sub.s3_bucket)
    if not same_source or job.options != sub.options:
        raise _mismatch()


def _mismatch() -> PermanentError:
    return PermanentError(
        "this idempotency key was used for a different request (file, source or options)",
        ErrorCode.IDEMPOTENCY_MISMATCH,
    )


async def _create(ctx: Context, sub: Submission) -> tuple[Job, bool]:
    """Make the job; (job, True), or (the job, False) when another submitter of the same
    idempotent request stored its record first."""
    job_id = sub.job_id or new_job_id()
    with job_context(job_id):
        # Raises QuotaExceeded before anything is stored.
        pages = await reserve(
            ctx.storage,
            ctx.settings,
            tenant=sub.tenant,
            door=sub.door,
            job_id=job_id,
            spool_path=sub.spool_path,
        )
        try:
            return await _create_job(ctx, sub, job_id, pages)
        except BaseException:
            if pages is not None:
                await release(ctx.storage, inflight_key(sub.tenant, job_id, pages))
            raise


async def _create_job(
    ctx: Context, sub: Submission, job_id: str, pages_reserved: int | None = None
) -> tuple[Job, bool]:
    source_key, source_bucket = await _store_source(ctx, sub, job_id)
    job = Job(
        job_id=job_id,
        # The time in the id, exactly: the record's key (its place in the index) holds it.
        created_at=id_created_at(job_id) or utcnow(),
        tenant=sub.tenant,
        door=sub.door,
        filename=sub.filename,
        client_ref=sub.client_ref,
        options=sub.options,
        source_key=source_key,
        source_bucket=source_bucket,
        source_url=sub.url,
        reply_to=sub.reply_to,
        correlation_id=sub.correlation_id,
        source_sha256=sub.sha256,
        source_size=sub.size,
        webhook_url=sub.webhook.url if sub.webhook else None,
        traceparent=current_traceparent(),
        pages_reserved=pages_reserved,
        batch_id=sub.batch_id,
        target=sub.target,
    )
    try:
        rev = await lifecycle.accept(ctx, job)
    except WriteConflict:
        # Another submitter of this idempotent request stored it meanwhile; it publishes.
        return await _existing(ctx, sub, job_id), False
    try:
        await _publish_task(ctx, job, sub.webhook, rev)
    except TransientError:
        # Not accepted: take the record back so no half-made job lingers.
        with contextlib.suppress(TransientError):
            await ctx.jobs.discard(job)
        raise
    try:
        await lifecycle.announce_accepted(ctx, job)
    except TransientError:
        # The job is safely queued; only this notice is lost, and the terminal event still comes.
        log.warning("job %s accepted but the job.accepted event was not confirmed", job_id)
    return job, True


async def _publish_task(ctx: Context, job: Job, webhook: WebhookSpec | None, rev: Revision) -> None:
    """The job's task, confirmed. The record's version travels beside it (a header: tasks of
    this version stay readable by handlers of the previous one); the handler's ending is
    written over it."""
    await ctx.broker.publish(
        ctx.topology.tasks,
        ctx.topology.TASK_KEY,
        ExtractTask(job_id=job.job_id, tenant=job.tenant, webhook=webhook, job=job),
        message_id=job.job_id,
        headers={RECORD_ETAG_HEADER: rev.etag} if rev.etag else None,
    )


async def _store_source(
    ctx: Context, sub: Submission, job_id: str
) -> tuple[str | None, str | None]:
    """Store an upload, or check that the named source exists; returns (key, bucket)."""
    if sub.spool_path is not None:
        await ctx.storage.put_file(upload_key(job_id), sub.spool_path, "application/pdf")
        return upload_key(job_id), None
    if sub.url is not None:
        await check_source_url(sub.url, SsrfPolicy(ctx.settings.webhook_allowed_networks))
        return None, None
    if sub.s3_key is None:
        raise PermanentError("the request has no source", ErrorCode.INVALID_REQUEST)
    try:
        info = await ctx.storage.stat(sub.s3_key, bucket=sub.s3_bucket)
    except ObjectNotFound as exc:
        raise PermanentError(
            f"no object {sub.s3_key!r} in the source bucket", ErrorCode.SOURCE_UNREACHABLE
        ) from exc
    if info.size > ctx.settings.max_file_bytes:
        raise PermanentError(
            f"the file is larger than the limit of {ctx.settings.max_file_bytes} bytes",
            ErrorCode.FILE_TOO_LARGE,
        )
    return sub.s3_key, sub.s3_bucket

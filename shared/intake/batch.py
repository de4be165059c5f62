"""Turning a batch of spooled files or named sources into a batch of queued jobs (or refusals,
each with why).

Policy (README "Batches"): items refused at the door (not a PDF, empty, too large, a source the
tenant may not read, options that do not validate) are refused one by one and the others are
accepted; the answer lists every refusal. A batch in which no item is accepted is refused as a
whole. Items are queued as single jobs are, with their job ids chosen before the batch record is
written, so the arbiter never meets an item it does not know.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from shared.errors import ErrorCode, PdfRelayError, PermanentError, TransientError
from shared.intake.submit import Submission, Submitter
from shared.intake.uploads import Spooled
from shared.jobs import batches
from shared.jobs.batches import Batch, BatchItem
from shared.models import ExtractOptions, JobError, JobTarget, Source, new_job_id
from shared.runtime.context import Context

log = logging.getLogger(__name__)

SUBMIT_CONCURRENCY = 8
"""Items stored and queued at the same time."""


@dataclass(frozen=True)
class BatchFile:
    """One item of a batch: an uploaded file, or a source the service fetches itself."""

    filename: str | None
    client_ref: str | None
    spooled: Spooled | PdfRelayError | None = None
    """The spooled upload, or why the item was refused at the door (None: it names `source`)."""
    source: Source | None = None
    options: ExtractOptions | None = None
    """The item's own options (its overrides applied); None: the batch's."""
    target: JobTarget | None = None
    """The item's own target; None: the batch's."""

    @property
    def refused(self) -> PdfRelayError | None:
        return self.spooled if isinstance(self.spooled, PdfRelayError) else None


class BatchRefused(PermanentError):
    """No item of the batch could be accepted, each for a reason of its own (`items`)."""

    code = ErrorCode.BATCH_REFUSED

    def __init__(self, items: tuple[BatchItem, ...]) -> None:
        super().__init__(f"every item of the batch was refused ({len(items)}); nothing was queued")
        self.items = items


def _refusal(exc: PdfRelayError) -> JobError:
    return JobError(code=exc.code.value, message=exc.message)


async def submit_batch(
    ctx: Context,
    submitter: Submitter,
    *,
    tenant: str,
    options: ExtractOptions,
    files: list[BatchFile],
    webhook_url: str | None,
    target: JobTarget | None = None,
    webhook_token: str | None = None,
) -> Batch:
    """Store and queue every acceptable file; returns the batch as recorded (state `open`).

    Raises:
        PdfRelayError: no item could be queued (storage or broker away, queue full, quota):
            the first such error; nothing of the batch was accepted.
        BatchRefused: no item could be queued, each for a reason of its own (a source that
            does not exist, a URL refused).
    """
    batch = Batch(
        batch_id=new_job_id(),
        tenant=tenant,
        webhook_url=webhook_url,
        webhook_token=webhook_token is not None,
        items=tuple(
            BatchItem(
                index=i,
                filename=f.filename,
                client_ref=f.client_ref,
                job_id=None if f.refused else new_job_id(),
                refused=_refusal(f.refused) if f.refused else None,
            )
            for i, f in enumerate(files)
        ),
    )
    # First: should this process die before the batch is open, the arbiter opens it then.
    await batches.signal_deadline(ctx, batch.batch_id)
    if webhook_token is not None:
        await batches.save_token(ctx, batch.batch_id, webhook_token)
    await batches.save(ctx, batch)
    slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    not_queued: list[PdfRelayError] = []

    async def queue(item: BatchItem, f: BatchFile) -> BatchItem:
        spooled = f.spooled if isinstance(f.spooled, Spooled) else None
        s3 = f.source.s3 if f.source else None
        sub = Submission(
            tenant=tenant,
            door="http",
            options=f.options or options,
            spool_path=spooled.path if spooled else None,
            size=spooled.size if spooled else None,
            s3_bucket=s3.bucket if s3 else None,
            s3_key=s3.key if s3 else None,
            url=f.source.url if f.source else None,
            client_ref=item.client_ref,
            filename=item.filename,
            job_id=item.job_id,
            batch_id=batch.batch_id,
            target=f.target or target,
        )
        async with slots:
            try:
                await submitter.submit(ctx, sub)
            except PdfRelayError as exc:
                # Not queued (storage or broker away, queue full, quota): refused with the
                # reason, the client may send it again.
                not_queued.append(exc)
                return item.model_copy(update={"job_id": None, "refused": _refusal(exc)})
        return item

    done = list(
        await asyncio.gather(
            *(
                _same(item) if f.refused else queue(item, f)
                for item, f in zip(batch.items, files, strict=True)
            )
        )
    )
    if not any(i.job_id for i in done):
        await ctx.storage.delete(batches.batch_key(batch.batch_id))
        if webhook_token is not None:
            await ctx.storage.delete(batches.token_key(batch.batch_id))
        # The service's trouble (storage, broker, queue, quota) is said as such: retry later.
        busy = [e for e in not_queued if not isinstance(e, PermanentError)]
        if busy:
            raise busy[0]
        raise BatchRefused(tuple(done))
    batch = batch.model_copy(update={"items": tuple(done), "state": "open"})
    await batches.save(ctx, batch)
    try:
        await batches.signal(ctx, batch.batch_id)
    except TransientError:
        # Every item is queued; each item's end signals the arbiter anyway. Only a batch whose
        # items all ended before this point waits for a later signal (none comes): logged.
        log.error("batch %s: the arbiter was not told it is open", batch.batch_id)
    return batch


async def _same(item: BatchItem) -> BatchItem:
    return item

"""Turning a batch of spooled files into a batch of queued jobs (or refusals, each with why).

Policy (README "Batches"): files refused at the door (not a PDF, empty, too large) are refused
one by one and the others are accepted; the answer lists every refusal. A batch in which no file
is accepted is refused as a whole. Items are queued as single uploads are, with their job ids
chosen before the batch record is written, so the arbiter never meets an item it does not know.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from shared.errors import PdfRelayError, TransientError
from shared.intake.submit import Submission, Submitter
from shared.intake.uploads import Spooled
from shared.jobs import batches
from shared.jobs.batches import Batch, BatchItem
from shared.models import ExtractOptions, JobError, JobTarget, new_job_id
from shared.runtime.context import Context

log = logging.getLogger(__name__)

SUBMIT_CONCURRENCY = 8
"""Items stored and queued at the same time."""


@dataclass(frozen=True)
class BatchFile:
    filename: str | None
    client_ref: str | None
    spooled: Spooled | PdfRelayError
    """The spooled upload, or why it was refused at the door."""


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
) -> Batch:
    """Store and queue every acceptable file; returns the batch as recorded (state `open`).

    Raises:
        PdfRelayError: no item could be queued (storage or broker away, queue full, quota):
            the first such error; nothing of the batch was accepted.
    """
    batch = Batch(
        batch_id=new_job_id(),
        tenant=tenant,
        webhook_url=webhook_url,
        items=tuple(
            BatchItem(
                index=i,
                filename=f.filename,
                client_ref=f.client_ref,
                job_id=new_job_id() if isinstance(f.spooled, Spooled) else None,
                refused=None if isinstance(f.spooled, Spooled) else _refusal(f.spooled),
            )
            for i, f in enumerate(files)
        ),
    )
    await batches.save(ctx, batch)
    slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    not_queued: list[PdfRelayError] = []

    async def queue(item: BatchItem, spooled: Spooled) -> BatchItem:
        sub = Submission(
            tenant=tenant,
            door="http",
            options=options,
            spool_path=spooled.path,
            size=spooled.size,
            client_ref=item.client_ref,
            filename=item.filename,
            job_id=item.job_id,
            batch_id=batch.batch_id,
            target=target,
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
                queue(item, f.spooled) if isinstance(f.spooled, Spooled) else _same(item)
                for item, f in zip(batch.items, files, strict=True)
            )
        )
    )
    if not_queued and not any(i.job_id for i in done):
        await ctx.storage.delete(batches.batch_key(batch.batch_id))
        raise not_queued[0]
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

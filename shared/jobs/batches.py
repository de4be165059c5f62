"""Batches: many jobs submitted together, followed together, and a `batch.completed` once.

The record `batches/{id}/batch.json` is written by the ingress before any item is queued (its
job ids chosen up front, state `accepting`) and once more when every item is queued or refused
(state `open`), then a `BatchSignal` without a job; nobody writes it after. A batch item's
terminal announcement (shared/jobs/outcome.py) sends a `BatchSignal` to the single-active-consumer
queue `pdfrelay.batches` (handlers/batches.py): each becomes an empty marker
`batches/{id}/ended/{job_id}.{status}.{pages}` (idempotent; the item's page count rides in
the key, so one LIST gives a batch's counts and its pages), and the one consumer that finds every
accepted item ended queues the webhook, publishes `batch.completed` and writes
`batches/{id}/completed.json`; a later or redelivered signal finds that marker and does nothing
(the fan-out merge's discipline: one consumer at a time decides, a marker makes it stick).
A deadline signal (`signal_deadline`, sent before the record is written) reaches the arbiter
`batch_accept_deadline_s` later and opens a batch still `accepting`, its ingress dead.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, JobNotFound, NotRoutable, TransientError, WriteConflict
from shared.models import JOB_ID_RE, Job, JobError, JobStatus, Progress, WebhookDelivery, utcnow
from shared.runtime.context import Context
from shared.webhooks.dispatch import enqueue

log = logging.getLogger(__name__)

ENDED = frozenset(s.value for s in JobStatus if s.terminal)
COMPLETED_EVENT = "batch.completed"


class BatchItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    filename: str | None = None
    client_ref: str | None = None
    job_id: str | None = None
    refused: JobError | None = None
    """Why the item was not accepted (then it has no job)."""


class Batch(BaseModel):
    schema_: Literal["pdfrelay.batch/1"] = Field(default="pdfrelay.batch/1", alias="schema")
    batch_id: str
    tenant: str
    state: Literal["accepting", "open"] = "accepting"
    created_at: datetime = Field(default_factory=utcnow)
    webhook_url: str | None = None
    webhook_token: bool = False
    """The webhook has a token (stored at `token_key`, never here)."""
    items: tuple[BatchItem, ...] = ()

    model_config = ConfigDict(populate_by_name=True)

    @property
    def accepted(self) -> set[str]:
        return {i.job_id for i in self.items if i.job_id is not None and i.refused is None}


class BatchSignal(BaseModel):
    """A message on `pdfrelay.batches`: an item ended (`job_id`, `status`), or (no job) the
    ingress has queued every item of the batch."""

    schema_: Literal["pdfrelay.batch-signal/1"] = Field(
        default="pdfrelay.batch-signal/1", alias="schema"
    )
    batch_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    job_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    status: str | None = None
    pages: int | None = Field(default=None, ge=0)
    """The ended item's page count (its pages total, else the pages it did); None from a
    sender of the version before (its marker then has no pages)."""
    deadline: bool = False
    """(No job) the batch's acceptance deadline has passed (`signal_deadline`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


async def signal(ctx: Context, batch_id: str, job: Job | None = None) -> None:
    """Tell the arbiter: `job` (an item of the batch) ended, or (None) every item is queued."""
    msg = BatchSignal(
        batch_id=batch_id,
        job_id=job.job_id if job else None,
        status=job.status.value if job else None,
        pages=item_pages(job.progress) if job else None,
    )
    message_id = f"{batch_id}.{job.job_id if job else 'open'}"
    await ctx.broker.publish(ctx.topology.tasks, ctx.topology.BATCH_KEY, msg, message_id=message_id)


async def signal_deadline(ctx: Context, batch_id: str) -> None:
    """Have the arbiter look at the batch once `batch_accept_deadline_s` has passed: the signal
    waits in `batches.deadline` until it expires into the arbiter's queue. A batch its ingress
    died while queuing stays `accepting` until then (its items queued so far run; the client
    had no answer), and is opened as it stands (`open_as_it_stands`)."""
    await ctx.broker.publish(
        "",
        ctx.topology.batches_deadline,
        BatchSignal(batch_id=batch_id, deadline=True),
        message_id=f"{batch_id}.deadline",
        expiration=ctx.settings.batch_accept_deadline_s,
    )


def item_pages(progress: Progress) -> int:
    """An ended item's pages for its batch's progress: its page count, else what it did."""
    return progress.pages_total if progress.pages_total is not None else progress.pages_done


class Ended(NamedTuple):
    """An item that has ended, as its marker says."""

    status: str
    pages: int | None
    """None: a marker of the version before, without its pages."""


def batch_key(batch_id: str) -> str:
    return f"batches/{batch_id}/batch.json"


def ended_prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/ended/"


def completed_key(batch_id: str) -> str:
    return f"batches/{batch_id}/completed.json"


def token_key(batch_id: str) -> str:
    """The batch webhook's token, apart from the record (no view reads it), until the
    `batch.completed` delivery carries it (then the webhooks handler keeps it sealed)."""
    return f"batches/{batch_id}/webhook-token"


async def save_token(ctx: Context, batch_id: str, token: str) -> None:
    await ctx.storage.put_bytes(token_key(batch_id), token.encode(), "application/octet-stream")


async def _token(ctx: Context, batch_id: str) -> str | None:
    try:
        return (await ctx.storage.get_bytes(token_key(batch_id))).decode()
    except ObjectNotFound:
        return None


def event_id(batch_id: str) -> str:
    return f"msg_{batch_id}_batch_completed"


async def save(ctx: Context, batch: Batch) -> None:
    await ctx.storage.put_bytes(
        batch_key(batch.batch_id), batch.model_dump_json(by_alias=True).encode()
    )


async def load(ctx: Context, batch_id: str, tenant: str | None) -> Batch:
    """The batch (of `tenant`, when given). Raises JobNotFound (404) otherwise."""
    if not JOB_ID_RE.match(batch_id):
        raise JobNotFound(f"no batch {batch_id[:64]!r}")
    try:
        batch = Batch.model_validate_json(await ctx.storage.get_bytes(batch_key(batch_id)))
    except (ObjectNotFound, ValueError) as exc:
        raise JobNotFound(f"no batch {batch_id[:64]!r}") from exc
    if tenant is not None and batch.tenant != tenant:
        raise JobNotFound(f"no batch {batch_id[:64]!r}")  # the same answer: no existence leak
    return batch


async def ended(ctx: Context, batch_id: str) -> dict[str, Ended]:
    """job id → status and pages of the items that have ended (one LIST)."""
    prefix = ended_prefix(batch_id)
    out: dict[str, Ended] = {}
    for key in await ctx.storage.list_keys(prefix):
        job_id, _, rest = key.removeprefix(prefix).partition(".")
        status, _, pages = rest.partition(".")
        out[job_id] = Ended(status, int(pages) if pages.isdigit() else None)
    return out


async def completion(ctx: Context, batch_id: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(await ctx.storage.get_bytes(completed_key(batch_id)))
    except ObjectNotFound:
        return None
    return data


def counts(batch: Batch, ends: dict[str, Ended]) -> dict[str, int]:
    accepted = batch.accepted
    done = {job: end.status for job, end in ends.items() if job in accepted}
    by_status = {s: sum(1 for v in done.values() if v == s) for s in sorted(ENDED)}
    return {
        "total": len(batch.items),
        "refused": len(batch.items) - len(accepted),
        "accepted": len(accepted),
        "pending": len(accepted) - len(done),
        **by_status,
    }


def progress(
    batch: Batch, ends: dict[str, Ended], live: dict[str, Progress] | None = None
) -> dict[str, int]:
    """Pages done / total over the accepted items whose page count is known: an ended item
    counts its pages as done (what it will ever do), an item still running (`live`: the records
    read of some not ended) its progress; `items_counted` says over how many items."""
    done = total = counted = 0
    for job_id in batch.accepted:
        end = ends.get(job_id)
        if end is not None:
            if end.pages is None:
                continue
            done, total = done + end.pages, total + end.pages
        else:
            now = (live or {}).get(job_id)
            if now is None or now.pages_total is None:
                continue
            done, total = done + now.pages_done, total + now.pages_total
        counted += 1
    return {"pages_done": done, "pages_total": total, "items_counted": counted}


def summary(
    batch: Batch,
    ends: dict[str, Ended],
    done: dict[str, Any] | None,
    base_url: str,
    live: dict[str, Progress] | None = None,
) -> dict[str, Any]:
    """The batch without its items: what `GET /v1/batches/{id}` heads with, and the webhook."""
    tally = counts(batch, ends)
    status = "accepting" if batch.state == "accepting" else "processing"
    if done is not None or (batch.state == "open" and tally["pending"] == 0):
        status = "completed"
    return {
        "batch_id": batch.batch_id,
        "status": status,
        "created_at": batch.created_at.isoformat(),
        "completed_at": done.get("completed_at") if done else None,
        "counts": tally,
        "progress": progress(batch, ends, live),
        "links": {"self": f"{base_url}/v1/batches/{batch.batch_id}"},
    }


NOT_QUEUED = JobError(
    code=ErrorCode.INTERNAL.value,
    message="the service stopped before this item was queued; nothing of it runs: send it again",
)


async def open_as_it_stands(ctx: Context, batch: Batch) -> Batch:
    """A batch still `accepting` at its deadline (its ingress died while queuing it), opened:
    an item whose job exists is accepted, the others are refused with NOT_QUEUED. Written over
    the version read, so an ingress that was only slow and opened it meanwhile stands."""
    items, never_queued = [], 0
    for item in batch.items:
        if item.job_id is not None and item.refused is None:
            try:
                await ctx.jobs.get(item.job_id, batch.tenant)
            except JobNotFound:
                item = item.model_copy(update={"job_id": None, "refused": NOT_QUEUED})
                never_queued += 1
        items.append(item)
    data, etag = await ctx.storage.get_versioned(batch_key(batch.batch_id))
    stored = Batch.model_validate_json(data)
    if stored.state != "accepting":
        return stored
    opened = batch.model_copy(update={"items": tuple(items), "state": "open"})
    try:
        await ctx.storage.put_versioned(
            batch_key(batch.batch_id), opened.model_dump_json(by_alias=True).encode(), etag
        )
    except WriteConflict:
        return await load(ctx, batch.batch_id, None)
    log.warning(
        "batch %s was still accepting at its deadline: opened, %d items never queued refused",
        batch.batch_id,
        never_queued,
    )
    return opened


async def on_signal(ctx: Context, signal: BatchSignal) -> None:
    """One message of the arbiter's queue (its only consumer at a time: no race here)."""
    batch_id = signal.batch_id
    if signal.job_id is not None and signal.status in ENDED:
        pages = "" if signal.pages is None else f".{signal.pages}"
        await ctx.storage.put_bytes(
            f"{ended_prefix(batch_id)}{signal.job_id}.{signal.status}{pages}", b""
        )
    try:
        batch = await load(ctx, batch_id, None)
    except JobNotFound:
        return  # deleted after its retention
    if signal.deadline and batch.state == "accepting":
        batch = await open_as_it_stands(ctx, batch)
    if batch.state != "open" or await completion(ctx, batch_id) is not None:
        return  # still accepting (its `batch.accepted` comes), or completed already
    ends = await ended(ctx, batch_id)
    if not batch.accepted <= ends.keys():
        return
    done = {"completed_at": utcnow().isoformat()}
    view = summary(batch, ends, done, ctx.settings.base_url)
    body = json.dumps(
        {"type": COMPLETED_EVENT, "timestamp": done["completed_at"], "data": view},
        separators=(",", ":"),
    )
    try:
        await ctx.broker.publish(
            ctx.topology.events,
            COMPLETED_EVENT,
            json.dumps(view).encode(),
            message_id=event_id(batch_id),
            headers={"batch_id": batch_id, "tenant": batch.tenant},
        )
    except NotRoutable:
        log.debug("batch %s: no queue is bound to batch.completed events", batch_id)
    if batch.webhook_url is not None:
        await enqueue(
            ctx,
            WebhookDelivery(
                event_id=event_id(batch_id),
                job_id=batch_id,
                event_type=COMPLETED_EVENT,
                url=batch.webhook_url,
                token=await _token(ctx, batch_id) if batch.webhook_token else None,
                body=body,
            ),
        )
    # Last: a crash before it re-sends the same webhook-id and event id on redelivery.
    await ctx.storage.put_bytes(completed_key(batch_id), json.dumps(done).encode())
    if batch.webhook_token:
        try:
            await ctx.storage.delete(token_key(batch_id))
        except TransientError as exc:  # the sweeper takes it with the batch
            log.warning("batch %s: webhook token not removed: %s", batch_id, exc.message)
    log.info("batch %s completed: %s", batch_id, view["counts"])

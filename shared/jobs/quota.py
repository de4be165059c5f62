"""Admission by cost: a tenant's pages in flight, held as marker objects in S3.

While a job of a tenant has not ended it holds `inflight/{tenant}/{job_id}.{pages}` (written
before its upload is stored, deleted by `JobStore.save` when it ends). The pages are in the key,
so a tenant's load is one LIST of its prefix, seen alike by every ingress process.

Admission writes its own hold first and then lists: when the sum is over the quota (and other
jobs are in flight) it takes the hold back and answers 429. Two submissions racing in
different processes both see each other, so the quota is never exceeded by a race (S3 listings
are strongly consistent on MinIO and AWS), at the price of both being refused now and then.
A hold left behind by a crash is removed by the sweeper once its job has ended or vanished.

The trade-off against a per-tenant counter object: S3 has no atomic increment, so a counter
would need a lock or conditional writes and would drift for ever after one lost update; the
markers cost a PUT, a LIST and a DELETE per job and cannot drift. A LIST returns at most 1,000
keys per request, so a tenant with tens of thousands of jobs in flight costs several requests
per admission (the queue length limit bounds that).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from shared.adapters.storage import Storage
from shared.errors import JobNotFound, QuotaExceeded, TransientError
from shared.jobs.pagecount import count_pages
from shared.jobs.records import INFLIGHT_PREFIX, JobStore, inflight_key, inflight_prefix
from shared.settings import Settings

log = logging.getLogger(__name__)

ENFORCED_DOORS = frozenset({"http"})
"""Doors that answer 429. Jobs from the others (broker, object drop) count but are never
refused: their senders cannot be told to come back later."""
STALE_HOLD = timedelta(hours=1)
"""A hold without a record is only removed after this long: its job may still be on its way."""
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 3600
RETRY_AFTER_UNMEASURED_S = 10


def _pages_of(key: str) -> int:
    _, _, pages = key.rpartition(".")
    return int(pages) if pages.isdigit() else 0


async def pages_in_flight(storage: Storage, tenant: str) -> int:
    """The pages of the tenant's jobs that have not ended (as far as their holds say)."""
    return sum(_pages_of(key) for key in await storage.list_keys(inflight_prefix(tenant)))


async def reserve(
    storage: Storage,
    settings: Settings,
    *,
    tenant: str,
    door: str,
    job_id: str,
    spool_path: str | None,
) -> int | None:
    """Take the job's hold on the tenant's quota; returns its pages (None: no quota is set).

    A document is counted from its spooled upload (shared/jobs/pagecount.py). One whose count is
    unknown is charged as `max_pages`, the largest the service accepts: a count that failed, and
    a document the service fetches itself (S3 object, URL), whose pages nobody has seen yet —
    charging it as one page would let any tenant pass its quota by naming a source instead.

    Raises:
        QuotaExceeded: the door enforces the quota and the tenant is over it; nothing is held.
    """
    quota = settings.tenant_page_quota
    if quota is None:
        return None
    counted = None
    if spool_path is not None:
        counted = await count_pages(spool_path, settings.pagecount_timeout_s)
    pages = settings.max_pages if counted is None else counted
    key = inflight_key(tenant, job_id, pages)
    await storage.put_bytes(key, b"", "application/octet-stream")
    if door not in ENFORCED_DOORS:
        return pages
    try:
        others = sum(
            _pages_of(k) for k in await storage.list_keys(inflight_prefix(tenant)) if k != key
        )
    except TransientError:
        await release(storage, key)
        raise
    # A document larger than the whole quota is admitted alone rather than never.
    if others > 0 and others + pages > quota:
        await release(storage, key)
        raise QuotaExceeded(
            f"the tenant has {others} pages in flight and this document has {pages}; "
            f"the quota is {quota} pages",
            excess_pages=others + pages - quota,
        )
    return pages


async def release(storage: Storage, key: str) -> None:
    try:
        await storage.delete(key)
    except TransientError as exc:
        log.warning("quota hold %s not released (the sweeper will): %s", key, exc.message)


def retry_after_s(excess_pages: int, pages_per_s: float | None, workers: int) -> int:
    """When `excess_pages` will have drained: at the measured speed of one worker, times the
    workers that can run the tenant's jobs at once (an estimate; other tenants share them)."""
    if not pages_per_s or pages_per_s <= 0:
        return RETRY_AFTER_UNMEASURED_S
    seconds = excess_pages / (pages_per_s * max(1, workers))
    return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(seconds)))


async def sweep_holds(jobs: JobStore, now: datetime | None = None) -> int:
    """Remove holds whose job has ended or (after `STALE_HOLD`) does not exist; returns how many.

    They are left behind only when a release failed (storage away at the wrong moment)."""
    now = now or datetime.now(UTC)
    removed = 0
    for info in await jobs.storage.list_objects(INFLIGHT_PREFIX):
        segment, _, name = info.key.removeprefix(INFLIGHT_PREFIX).rpartition("/")
        job_id = name.split(".", 1)[0]
        try:
            job = await jobs.get(job_id, unquote(segment))
        except JobNotFound:
            if info.last_modified is None or now - info.last_modified < STALE_HOLD:
                continue
        else:
            if not job.status.terminal:
                continue
        await jobs.storage.delete(info.key)
        removed += 1
    return removed

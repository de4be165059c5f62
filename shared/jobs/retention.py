"""Retention: jobs are deleted `PDFRELAY_RETENTION_DAYS` after they ended.

Two mechanisms, because S3 servers differ:
- `apply_lifecycle` asks the S3 server to expire pdfrelay's prefixes after that many whole days
  (MinIO and AWS S3 do it; moto stores the rules but never applies them). Lifecycle counts from
  each object's last write, so it is the backstop, a day late at most;
- `sweep`, run periodically by every ingress (and by `pdfrelay sweep`), deletes exactly the jobs
  that ended before the cutoff: record (which is its index entry), webhook state, cancel marker,
  upload, results. It finds them in the per-tenant indexes, whose names sort by creation time, so
  one LIST per tenant starting at the cutoff yields exactly the jobs created before it.

Never deleted: jobs that have not ended, sources that were not uploaded to pdfrelay (an S3 key
or URL the client named, `inbox/` objects) and the object-drop `outbox/`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from shared.errors import JobNotFound, TransientError
from shared.jobs.quota import sweep_holds
from shared.jobs.records import (
    INDEX_PREFIX,
    JobStore,
    inflight_key,
    inverted_ms,
    parse_index_name,
    upload_key,
)

log = logging.getLogger(__name__)

RULE_ID_PREFIX = "pdfrelay-retention-"
EXPIRING_PREFIXES = ("uploads/", "jobs/", "results/", "index/", "idempotency/", "inflight/")
BATCH = 1000


@dataclass(frozen=True)
class SweepReport:
    jobs_deleted: int = 0
    jobs_kept_running: int = 0
    idempotency_keys_deleted: int = 0
    quota_holds_deleted: int = 0


async def apply_lifecycle(jobs: JobStore, retention: timedelta) -> bool:
    """Set expiration rules for pdfrelay's prefixes, keeping the bucket's other rules.

    Returns False (and logs) when the server does not take lifecycle rules."""
    days = max(1, math.ceil(retention.total_seconds() / 86400))
    storage = jobs.storage
    try:
        current = await storage.get_lifecycle()
        rules = [r for r in (current.rules if current else []) if not _ours(r.rule_id)]
        rules += [
            Rule(
                ENABLED,
                rule_filter=Filter(prefix=prefix),
                rule_id=f"{RULE_ID_PREFIX}{prefix.rstrip('/')}",
                expiration=Expiration(days=days),
            )
            for prefix in EXPIRING_PREFIXES
        ]
        await storage.set_lifecycle(LifecycleConfig(rules))
    except TransientError as exc:
        log.warning("no S3 lifecycle rules (%s); the sweeper alone enforces retention", exc.message)
        return False
    return True


def _ours(rule_id: str | None) -> bool:
    return bool(rule_id and rule_id.startswith(RULE_ID_PREFIX))


async def sweep(jobs: JobStore, retention: timedelta, now: datetime | None = None) -> SweepReport:
    """Delete every job that ended before `now - retention`; returns what was done."""
    now = now or datetime.now(UTC)
    cutoff = now - retention
    deleted = kept = 0
    start_name = f"{inverted_ms(cutoff):013d}"
    for prefix in await jobs.storage.list_prefixes(INDEX_PREFIX):
        after = prefix + start_name
        while keys := await jobs.storage.list_after(prefix, after, BATCH):
            for key in keys:
                name = key.removeprefix(prefix)
                outcome = await _expire(jobs, tenant_of_prefix(prefix), key, name, cutoff)
                deleted += outcome == "deleted"
                kept += outcome == "running"
            after = keys[-1]
    idem = 0
    for info in await jobs.storage.list_objects("idempotency/"):
        if info.last_modified is not None and info.last_modified < cutoff:
            await jobs.storage.delete(info.key)
            idem += 1
    holds = await sweep_holds(jobs, now)
    report = SweepReport(deleted, kept, idem, holds)
    if deleted or idem or holds:
        log.info("retention sweep: %s", report)
    return report


async def sweep_forever(jobs: JobStore, retention: timedelta, interval_s: float) -> None:
    """Ask for the lifecycle rules once, then sweep every `interval_s` (an ingress's task)."""
    lifecycle_tried = False
    while True:
        try:
            if not lifecycle_tried:
                lifecycle_tried = True
                await apply_lifecycle(jobs, retention)
            await sweep(jobs, retention)
        except TransientError as exc:
            log.warning("retention sweep interrupted: %s", exc.message)
        except Exception:
            # The sweeper must outlive a bad record; the next round tries again.
            log.exception("retention sweep failed")
        await asyncio.sleep(interval_s)


def tenant_of_prefix(prefix: str) -> str:
    """The tenant of an index prefix `index/{tenant segment}/`."""
    return unquote(prefix.removeprefix(INDEX_PREFIX).rstrip("/"))


async def _expire(jobs: JobStore, tenant: str, key: str, name: str, cutoff: datetime) -> str:
    """`key`: the job's record (`….json`) or an index entry of the previous layout."""
    parsed = parse_index_name(name)
    if parsed is None:
        return "skipped"
    _, job_id = parsed
    try:
        job = await jobs.get(job_id, tenant)
    except JobNotFound:
        await delete_job_keys(jobs, job_id)
        await jobs.storage.delete(key)
        return "deleted"
    if not job.status.terminal:
        return "running"
    if (job.finished_at or job.created_at) >= cutoff:
        return "recent"
    # A URL source is stored under uploads/ too when the job was split into page ranges.
    uploaded = job.source_key == upload_key(job_id) or job.source_url is not None
    await delete_job_keys(jobs, job_id, uploaded=uploaded, result_key=job.result_key)
    if job.pages_reserved is not None:
        await jobs.storage.delete(inflight_key(job.tenant, job_id, job.pages_reserved))
    # The index entry (the record itself, in the current layout) goes last: an interrupted
    # sweep finds the job again next time.
    await jobs.storage.delete(key)
    return "deleted"


async def delete_job_keys(
    jobs: JobStore, job_id: str, *, uploaded: bool = True, result_key: str | None = None
) -> None:
    """Everything pdfrelay stored for the job but its index entry, which is its record in the
    current layout (a record of the previous layout, under `jobs/`, last). `result_key`: its
    result stored under its cache key (without a record, the bucket's expiry rule takes it)."""
    storage = jobs.storage
    if result_key is not None:
        await storage.delete(result_key)
    for key in await storage.list_keys(f"results/{job_id}/"):
        await storage.delete(key)
    if uploaded:
        await storage.delete(upload_key(job_id))
    record = f"jobs/{job_id}/record.json"
    for key in sorted(await storage.list_keys(f"jobs/{job_id}/"), key=lambda k: k == record):
        await storage.delete(key)

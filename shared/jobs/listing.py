"""Listing a tenant's jobs, newest first, with filters and cursor paging, from its S3 index.

Every job's record is stored at `index/{tenant}/{inverted created ms}-{job_id}.json` (jobs of
the previous layout: an empty object of that name without `.json` beside a record under
`jobs/`), so S3's ascending key order is newest first and a page is a LIST with
`start-after` = the cursor, under the tenant's own prefix: no request can reach another
tenant's entries. Status, door and client_ref are read from the records of the listed entries;
`created_after` stops the scan where the entries get older. A page with filters may hold fewer
than `limit` jobs while more follow: the scan of one request is bounded (`SCAN_BUDGET` entries),
and `next_cursor` says where to go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.errors import JobNotFound
from shared.jobs.records import INDEX_NAME_RE, JobStore, index_prefix, inverted_ms
from shared.models import Job, JobStatus

SCAN_BUDGET = 1000
"""Index entries one request looks at, at most."""
MAX_LIMIT = 100


class InvalidCursor(ValueError):
    """The cursor is not one this service handed out."""


@dataclass(frozen=True)
class JobFilter:
    statuses: frozenset[JobStatus] = frozenset()
    door: str | None = None
    client_ref: str | None = None
    created_after: datetime | None = None

    def matches(self, job: Job) -> bool:
        return (
            (not self.statuses or job.status in self.statuses)
            and (self.door is None or job.door == self.door)
            and (self.client_ref is None or job.client_ref == self.client_ref)
            and (self.created_after is None or job.created_at > self.created_after)
        )


@dataclass(frozen=True)
class JobPage:
    jobs: Sequence[Job]
    next_cursor: str | None


async def list_jobs(
    store: JobStore,
    tenant: str,
    flt: JobFilter,
    limit: int,
    cursor: str | None = None,
    scan_budget: int = SCAN_BUDGET,
) -> JobPage:
    """One page of the tenant's jobs that match `flt`, newest first.

    Raises:
        InvalidCursor: `cursor` is malformed.
        TransientError: storage is away.
    """
    if cursor is not None and not INDEX_NAME_RE.match(cursor):
        raise InvalidCursor("the cursor is not valid")
    prefix = index_prefix(tenant)
    # Entries at or past this name are not newer than `created_after`.
    boundary = f"{inverted_ms(flt.created_after):013d}" if flt.created_after else None
    found: list[Job] = []
    after = cursor
    scanned = 0
    while scanned < scan_budget:
        want = min(max(limit - len(found), 1) * 2, scan_budget - scanned, 1000)
        keys = await store.storage.list_after(prefix, prefix + after if after else None, want)
        names = [k.removeprefix(prefix) for k in keys]
        last_batch = len(keys) < want
        if boundary is not None and names and names[-1] >= boundary:
            names = [n for n in names if n < boundary]
            last_batch = True
        jobs = await asyncio.gather(*(_record(store, tenant, n) for n in names))
        for i, (name, job) in enumerate(zip(names, jobs, strict=True)):
            scanned += 1
            after = name
            if job is not None and flt.matches(job):
                found.append(job)
                if len(found) == limit:
                    more = i < len(names) - 1 or not last_batch
                    return JobPage(found, after if more else None)
        if last_batch:
            return JobPage(found, None)
    return JobPage(found, after)


async def _record(store: JobStore, tenant: str, name: str) -> Job | None:
    m = INDEX_NAME_RE.match(name)
    if m is None:
        return None
    try:
        return await store.get(m.group(2), tenant)
    except JobNotFound:
        return None  # deleted after its retention, or never accepted

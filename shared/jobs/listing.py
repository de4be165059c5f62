"""Listing a tenant's jobs, newest first, with filters and cursor paging, from its S3 index.

Every job's record is stored at `index/{tenant}/{inverted created ms}-{job_id}.json` (jobs of
the previous layout: an empty object of that name without `.json` beside a record under
`jobs/`), so S3's ascending key order is newest first and a page is a LIST with
`start-after` = the cursor, under the tenant's own prefix: no request can reach another
tenant's entries. Status, door and client_ref are read from the records of the listed entries;
`created_after` stops the scan where the entries get older. A page with filters may hold fewer
than `limit` jobs while more follow: the scan of one request is bounded (`SCAN_BUDGET` entries),
and `next_cursor` says where to go on.

A page costs one LIST and a GET per record it shows (without filters, no more records are read
than shown), but not for a job that has ended whose record this process has read before: an
ended job's record is never written again (an ending is stored once, lifecycle.py), so it is kept
in `EndedRecords`, a bounded memory of this process. Jobs that are still moving are read afresh
every time.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.errors import JobNotFound
from shared.jobs.records import INDEX_NAME_RE, JobStore, index_prefix, inverted_ms
from shared.models import Job, JobStatus

SCAN_BUDGET = 1000
"""Index entries one request looks at, at most."""
MAX_LIMIT = 100


ENDED_RECORDS = 5000
"""Ended jobs' records a process keeps for its lists (about 1 to 3 KB each)."""


class EndedRecords:
    """Records of ended jobs, by job id, the least recently used dropped past `size`."""

    def __init__(self, size: int = ENDED_RECORDS) -> None:
        self._size = size
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            self.misses += 1
            return None
        self.hits += 1
        self._jobs.move_to_end(job_id)
        return job

    def keep(self, job: Job) -> None:
        """Remember `job` if it has ended (a record still moving is never kept)."""
        if not job.status.terminal:
            return
        self._jobs[job.job_id] = job
        self._jobs.move_to_end(job.job_id)
        while len(self._jobs) > self._size:
            self._jobs.popitem(last=False)

    def __len__(self) -> int:
        return len(self._jobs)


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
    ended: EndedRecords | None = None,
) -> JobPage:
    """One page of the tenant's jobs that match `flt`, newest first; `ended`: the process's
    memory of ended jobs' records (read through, filled here).

    Raises:
        InvalidCursor: `cursor` is malformed.
        TransientError: storage is away.
    """
    if cursor is not None and not INDEX_NAME_RE.match(cursor):
        raise InvalidCursor("the cursor is not valid")
    prefix = index_prefix(tenant)
    # Entries at or past this name are not newer than `created_after`.
    boundary = f"{inverted_ms(flt.created_after):013d}" if flt.created_after else None
    filtered = bool(flt.statuses or flt.door or flt.client_ref)
    found: list[Job] = []
    after = cursor
    scanned = 0
    while scanned < scan_budget:
        need = limit - len(found)
        # Unfiltered, every entry is shown: one more than needed says whether more follow.
        want = min(need + 1 if not filtered else max(need, 1) * 2, scan_budget - scanned, 1000)
        keys = await store.storage.list_after(prefix, prefix + after if after else None, want)
        names = [k.removeprefix(prefix) for k in keys]
        last_batch = len(keys) < want
        if boundary is not None and names and names[-1] >= boundary:
            names = [n for n in names if n < boundary]
            last_batch = True
        # Unfiltered, only the records shown are read.
        wanted = names if filtered else names[:need]
        jobs = await asyncio.gather(*(_record(store, tenant, n, ended) for n in wanted))
        for i, (name, job) in enumerate(zip(wanted, jobs, strict=True)):
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


async def _record(
    store: JobStore, tenant: str, name: str, ended: EndedRecords | None
) -> Job | None:
    m = INDEX_NAME_RE.match(name)
    if m is None:
        return None
    job_id = m.group(2)
    job = ended.get(job_id) if ended is not None else None
    if job is not None and job.tenant == tenant:
        return job
    try:
        job = await store.get(job_id, tenant)
    except JobNotFound:
        return None  # deleted after its retention, or never accepted
    if ended is not None:
        ended.keep(job)
    return job

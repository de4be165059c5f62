"""Job records in S3: deterministic keys, tenant-scoped reads, idempotency, the public view."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from shared.adapters.storage import ObjectNotFound, ObjectStore
from shared.errors import JobNotFound, TransientError, WriteConflict
from shared.models import JOB_ID_RE, Job, WebhookState, id_created_at

log = logging.getLogger(__name__)

INDEX_PREFIX = "index/"
INFLIGHT_PREFIX = "inflight/"
_INVERT_MS = 10**13 - 1
"""Index names hold `_INVERT_MS - created_ms`, so S3's ascending key order is newest first."""
INDEX_NAME_RE = re.compile(r"^(\d{13})-([0-9a-f]{32})(\.json)?$")
"""A name in a tenant's index: `{inverted ms}-{job_id}.json` is the job's record itself;
without `.json` it is an empty entry of a job of the previous layout (record at
`jobs/{job_id}/record.json`)."""


def upload_key(job_id: str) -> str:
    return f"uploads/{job_id}.pdf"


def id_time_ms(job_id: str) -> int | None:
    """The creation time (ms) a job id of `new_job_id` carries; None for an id of the
    previous layout (uuid4: a `4` where the new ids have their `7`)."""
    return None if id_created_at(job_id) is None else int(job_id[:12], 16)


def legacy_record_key(job_id: str) -> str:
    """Where the previous version stored a record (with an empty index entry beside it)."""
    return f"jobs/{job_id}/record.json"


def record_key(tenant: str, job_id: str) -> str:
    """The job's record, which is also its entry in the tenant's index (GET /v1/jobs):
    `index/{tenant}/{inverted ms of the id's time}-{job_id}.json`, newest first by key.
    A job id of the previous layout keeps its record at `legacy_record_key`."""
    ms = id_time_ms(job_id)
    if ms is None:
        return legacy_record_key(job_id)
    return f"{index_prefix(tenant)}{_INVERT_MS - ms:013d}-{job_id}.json"


def webhook_state_key(job_id: str) -> str:
    return f"jobs/{job_id}/webhook.json"


def result_key(job_id: str) -> str:
    """A result not stored under its cache key (a fanned-out job's); see `job_result_key`."""
    return f"results/{job_id}/result.json"


def job_result_key(job: Job) -> str:
    """Where the job's result document is (GET /v1/jobs/{id}/result serves it)."""
    return job.result_key or result_key(job.job_id)


def artifact_key(job_id: str, name: str) -> str:
    return f"results/{job_id}/artifacts/{name}"


def cancel_key(job_id: str) -> str:
    """Written when a cancel is requested; the extract handler checks it before extracting."""
    return f"jobs/{job_id}/cancel.json"


def tenant_segment(tenant: str) -> str:
    """The tenant as one key segment (a `/` in a tenant name cannot reach another's prefix)."""
    return quote(tenant, safe="")


def index_prefix(tenant: str) -> str:
    return f"{INDEX_PREFIX}{tenant_segment(tenant)}/"


def inverted_ms(at: datetime) -> int:
    return _INVERT_MS - int(at.timestamp() * 1000)


def index_name(created_at: datetime, job_id: str) -> str:
    return f"{inverted_ms(created_at):013d}-{job_id}"


def parse_index_name(name: str) -> tuple[datetime, str] | None:
    """(created_at to the millisecond, job_id) of an index name (a record or an entry of the
    previous layout), None if malformed."""
    m = INDEX_NAME_RE.match(name)
    if m is None:
        return None
    created = datetime.fromtimestamp((_INVERT_MS - int(m.group(1))) / 1000, UTC)
    return created, m.group(2)


def index_key(tenant: str, created_at: datetime, job_id: str) -> str:
    """A job's entry in its tenant's index in the previous layout: an empty object (only jobs
    whose ids carry no time, `id_time_ms` None, still get one)."""
    return index_prefix(tenant) + index_name(created_at, job_id)


def inflight_prefix(tenant: str) -> str:
    return f"{INFLIGHT_PREFIX}{tenant_segment(tenant)}/"


def inflight_key(tenant: str, job_id: str, pages: int) -> str:
    """The job's hold on its tenant's page quota; the pages are in the name, so a LIST sums."""
    return f"{inflight_prefix(tenant)}{job_id}.{pages}"


class IdempotencyClaim(BaseModel):
    """What an idempotency key is bound to: the job's id, and a digest of the request (its
    source and options) to tell a repeat from another request reusing the key."""

    job_id: str
    request: str | None = None


def idempotency_key(tenant: str, key: str) -> str:
    digest = hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()
    return f"idempotency/{digest}.json"


RECORD_ETAG_HEADER = "record_etag"
"""On an extract task: the version (`Revision`) of the record the task carries, as stored."""


@dataclass
class Revision:
    """The version of a job's record (its ETag) that its holder last read or wrote.

    A write with a revision lands only over that version and moves the revision on; so of two
    writers that saw the same version (the ingress cancelling a queued job, the extract handler
    completing it from the record its task carried) exactly one stores its ending.
    """

    etag: str | None = None
    """None: not known (a task of an older ingress); lifecycle reads the record first."""


class JobStore:
    """Reads and writes job records; a write after the record's creation is conditional on the
    version its writer saw (`Revision`), so concurrent writers cannot overwrite each other."""

    def __init__(self, storage: ObjectStore) -> None:
        self.storage = storage

    async def save(self, job: Job, rev: Revision | None = None, *, new: bool = False) -> Revision:
        """Store the record and return its new version; with `rev` (its `etag` known), only over
        that version, and `rev` then names the new one; with `new`, only if there is no record
        yet. A job that has ended gives back its hold on the page quota.

        Raises:
            WriteConflict: the record is no longer at `rev` (someone else wrote it), or exists
                (with `new`).
            JobNotFound: there is no record to write over.
        """
        try:
            etag = await self.storage.put_versioned(
                record_key(job.tenant, job.job_id),
                job.model_dump_json(by_alias=True).encode(),
                rev.etag if rev is not None else None,
                if_absent=new,
            )
        except ObjectNotFound as exc:  # a conditional write of a record taken away
            raise JobNotFound(f"no job {job.job_id!r}") from exc
        if rev is None:
            rev = Revision(etag)
        else:
            rev.etag = etag
        if job.status.terminal and job.pages_reserved is not None:
            try:
                await self.storage.delete(inflight_key(job.tenant, job.job_id, job.pages_reserved))
            except TransientError as exc:
                # The outcome is stored; the sweeper removes holds of ended jobs later.
                log.warning("job %s: quota hold not released: %s", job.job_id, exc.message)
        return rev

    async def create(self, job: Job) -> Revision:
        """Store a new job's record, which is its entry in the tenant's index (GET /v1/jobs);
        an id without a time (previous layout) gets an empty entry beside the record.

        Raises:
            WriteConflict: there is a record of this id already (another submitter of the
                same idempotent request stored it).
        """
        rev = await self.save(job, new=True)
        if id_time_ms(job.job_id) is not None:
            return rev
        try:
            await self.storage.put_bytes(
                index_key(job.tenant, job.created_at, job.job_id), b"", "application/octet-stream"
            )
        except TransientError:
            with contextlib.suppress(TransientError):
                await self.storage.delete(record_key(job.tenant, job.job_id))
            raise
        return rev

    async def discard(self, job: Job) -> None:
        """Take back what `create` (and a quota hold) wrote, for a job that was not accepted,
        and the copy of its upload: a refused upload must not stay in the bucket."""
        keys = [record_key(job.tenant, job.job_id)]
        if id_time_ms(job.job_id) is None:
            keys.append(index_key(job.tenant, job.created_at, job.job_id))
        if job.pages_reserved is not None:
            keys.append(inflight_key(job.tenant, job.job_id, job.pages_reserved))
        if job.source_key == upload_key(job.job_id):
            keys.append(job.source_key)
        for key in keys:
            await self.storage.delete(key)

    async def request_cancel(self, job_id: str) -> None:
        await self.storage.put_json(
            cancel_key(job_id), {"requested_at": datetime.now(UTC).isoformat()}
        )

    async def cancel_requested(self, job_id: str) -> bool:
        try:
            await self.storage.stat(cancel_key(job_id))
        except ObjectNotFound:
            return False
        return True

    async def get(self, job_id: str, tenant: str) -> Job:
        """The tenant's job, or JobNotFound (also when it belongs to another tenant).

        One GET at the key the id and tenant give; a record of the previous layout is read
        at its old key (`legacy_record_key`)."""
        return (await self.get_revision(job_id, tenant))[0]

    async def get_revision(self, job_id: str, tenant: str) -> tuple[Job, Revision]:
        """The tenant's job and the version of its record read (for a write after it), in the
        same one GET as `get`."""
        if not JOB_ID_RE.match(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        try:
            raw, etag = await self.storage.get_versioned(record_key(tenant, job_id))
        except ObjectNotFound as exc:
            raise JobNotFound(f"no job {job_id!r}") from exc
        job = Job.model_validate_json(raw)
        if job.tenant != tenant:
            raise JobNotFound(f"no job {job_id!r}")
        return job, Revision(etag)

    async def webhook_state(self, job_id: str) -> WebhookState | None:
        try:
            raw = await self.storage.get_bytes(webhook_state_key(job_id))
        except ObjectNotFound:
            return None
        try:
            return WebhookState.model_validate_json(raw)
        except ValidationError:
            return None

    async def save_webhook_state(
        self, job_id: str, state: WebhookState, sealed: str | None = None
    ) -> None:
        """Store the job's webhook state; `sealed` (never in a dump of the state) goes too."""
        data = state.model_dump(mode="json")
        data["sealed"] = sealed
        await self.storage.put_bytes(
            webhook_state_key(job_id),
            json.dumps(data, separators=(",", ":")).encode(),
            "application/json",
        )

    async def find_idempotent(self, tenant: str, key: str) -> str | None:
        """The id of the job the idempotency `key` is bound to, if it is."""
        try:
            data = await self.storage.get_json(idempotency_key(tenant, key))
        except ObjectNotFound:
            return None
        job_id = data.get("job_id") if isinstance(data, dict) else None
        return job_id if isinstance(job_id, str) else None

    async def claim_idempotent(
        self, tenant: str, key: str, claim: IdempotencyClaim
    ) -> IdempotencyClaim | None:
        """Bind the idempotency `key` to `claim` (a job id not yet used) unless it is bound
        already: the server writes only where there is nothing (`If-None-Match`), so of two
        submitters of one key (a message redelivered to a second process while the first is at
        work, two requests of one client) exactly one binds it. Returns None when `claim` is now
        the key's, else the claim that was there first.

        The key is bound before the job is stored, so a submitter that dies midway leaves the
        id behind for the next try of the same request, which carries on with that job instead
        of making a second one."""
        name = idempotency_key(tenant, key)
        body = claim.model_dump_json().encode()
        try:
            await self.storage.put_versioned(name, body, if_absent=True)
            return None
        except WriteConflict:
            pass
        try:
            return IdempotencyClaim.model_validate_json(await self.storage.get_bytes(name))
        except ObjectNotFound:  # released meanwhile by its submitter: ours on the next try
            raise WriteConflict("the idempotency key was released meanwhile") from None

    async def release_idempotent(self, tenant: str, key: str) -> None:
        """Unbind a key whose job was not made (refused, or not stored), so that a later try
        is a new job of its own time."""
        await self.storage.delete(idempotency_key(tenant, key))

    async def view(self, job: Job, base_url: str) -> dict[str, Any]:
        """The job as GET /v1/jobs/{id} shows it: no secrets, no internal keys."""
        hook = await self.webhook_state(job.job_id) if job.webhook_url else None
        return public_view(job, hook, base_url)


def public_view(job: Job, hook: WebhookState | None, base_url: str) -> dict[str, Any]:
    data = job.model_dump(
        mode="json",
        include={
            "job_id",
            "status",
            "door",
            "filename",
            "client_ref",
            "options",
            "progress",
            "error",
            "result",
            "llm",
            "created_at",
            "started_at",
            "finished_at",
            "batch_id",
        },
    )
    link = f"{base_url}/v1/jobs/{job.job_id}"
    data["links"] = {"self": link, "result": f"{link}/result", "events": f"{link}/events"}
    if job.result is not None:
        data["result"]["result_url"] = f"{link}/result"
        for art in data["result"]["artifacts"]:
            art["url"] = f"{link}/artifacts/{art['name']}"
    # The presigned URLs (their signatures) never leave the record.
    data["target"] = (
        None if job.target is None else job.target.model_dump(mode="json", exclude={"urls"})
    )
    if job.webhook_url is not None:
        state = hook or WebhookState(url=job.webhook_url)
        data["webhook"] = state.model_dump(mode="json")
    else:
        data["webhook"] = None
    return data

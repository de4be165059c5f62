"""Job records in S3: deterministic keys, tenant-scoped reads, idempotency, the public view."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from shared.errors import ErrorCode, PermanentError
from shared.models import JOB_ID_RE, Job, WebhookState
from shared.storage import ObjectNotFound, Storage


def upload_key(job_id: str) -> str:
    return f"uploads/{job_id}.pdf"


def record_key(job_id: str) -> str:
    return f"jobs/{job_id}/record.json"


def webhook_state_key(job_id: str) -> str:
    return f"jobs/{job_id}/webhook.json"


def result_key(job_id: str) -> str:
    return f"results/{job_id}/result.json"


def artifact_key(job_id: str, name: str) -> str:
    return f"results/{job_id}/artifacts/{name}"


def idempotency_key(tenant: str, key: str) -> str:
    digest = hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()
    return f"idempotency/{digest}.json"


class JobNotFound(PermanentError):
    code = ErrorCode.NOT_FOUND


class JobStore:
    """Reads and writes job records; each record has one writer at a time."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def save(self, job: Job) -> None:
        await self.storage.put_bytes(
            record_key(job.job_id), job.model_dump_json(by_alias=True).encode()
        )

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or JobNotFound, also when it belongs to another tenant."""
        if not JOB_ID_RE.match(job_id):
            raise JobNotFound(f"no job {job_id!r}")
        try:
            raw = await self.storage.get_bytes(record_key(job_id))
        except ObjectNotFound as exc:
            raise JobNotFound(f"no job {job_id!r}") from exc
        job = Job.model_validate_json(raw)
        if tenant is not None and job.tenant != tenant:
            raise JobNotFound(f"no job {job_id!r}")
        return job

    async def webhook_state(self, job_id: str) -> WebhookState | None:
        try:
            raw = await self.storage.get_bytes(webhook_state_key(job_id))
        except ObjectNotFound:
            return None
        try:
            return WebhookState.model_validate_json(raw)
        except ValidationError:
            return None

    async def save_webhook_state(self, job_id: str, state: WebhookState) -> None:
        await self.storage.put_bytes(webhook_state_key(job_id), state.model_dump_json().encode())

    async def find_idempotent(self, tenant: str, key: str) -> str | None:
        try:
            data = await self.storage.get_json(idempotency_key(tenant, key))
        except ObjectNotFound:
            return None
        job_id = data.get("job_id") if isinstance(data, dict) else None
        return job_id if isinstance(job_id, str) else None

    async def remember_idempotent(self, tenant: str, key: str, job_id: str) -> None:
        await self.storage.put_json(idempotency_key(tenant, key), {"job_id": job_id})

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
            "created_at",
            "started_at",
            "finished_at",
        },
    )
    link = f"{base_url}/v1/jobs/{job.job_id}"
    data["links"] = {"self": link, "result": f"{link}/result", "events": f"{link}/events"}
    if job.result is not None:
        data["result"]["result_url"] = f"{link}/result"
        for art in data["result"]["artifacts"]:
            art["url"] = f"{link}/artifacts/{art['name']}"
    if job.webhook_url is not None:
        state = hook or WebhookState(url=job.webhook_url)
        data["webhook"] = state.model_dump(mode="json")
    else:
        data["webhook"] = None
    return data

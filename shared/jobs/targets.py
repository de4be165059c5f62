"""Result destinations: an ended job's outputs and manifest written to its `target`, once.

The job's terminal announcement (shared/jobs/outcome.py) queues a `DeliveryTask` on
`pdfrelay.targets`; the targets handler (handlers/targets.py, in the webhooks process: no
extraction slot waits on a destination) runs `deliver` for it:

- the outputs go to deterministic names, `{prefix}{job_id}/result.json` and one object per
  artifact (operator destinations), or to the URL the client gave for each name (presigned),
  or (kind `outbox`, which the object drop names for its jobs) to the door's `outbox/<name>…`
  in the door's own layout, written by the door's code through `Context.doors`, no manifest;
- `manifest.json` goes last: it lists what was written, with sizes and digests, and the job's
  outcome (a failed job's target gets the manifest alone);
- the record's `target` is settled then (`lifecycle.target_settled`), once.

Exactly once: a task redelivered after the record was settled writes nothing (it announces the
settled outcome again). One redelivered after a crash between the manifest and the record's
write finds the manifest at an operator destination and writes nothing either; one that crashed
earlier writes the same bytes to the same keys again (an identical copy, never a second one).
A presigned URL cannot be asked whether it was written: there, such a crash rewrites the same
bytes to the same URLs.

A destination that fails transiently (unreachable, 5xx, 429) is retried on the transient ladder
(the queue's backoff queue, `PDFRELAY_TRANSIENT_RETRY_BUDGET` times); then, or at once for a
refusal (403, a missing bucket, a URL the SSRF policy refuses), the target is settled `failed`
with the error, and the job stays `completed`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from shared.adapters.storage import ObjectNotFound, Storage
from shared.errors import ErrorCode, JobNotFound, PermanentError, TransientError
from shared.jobs import lifecycle
from shared.jobs.records import artifact_key, job_result_key
from shared.models import (
    MANIFEST,
    RESULT_OUTPUT,
    DeliveryTask,
    Job,
    JobError,
    JobStatus,
    JobTarget,
    utcnow,
)
from shared.runtime.context import Context
from shared.settings import Settings, TargetConfig
from shared.webhooks.ssrf import SsrfConnector, SsrfPolicy, pinned

log = logging.getLogger(__name__)

PUT_TIMEOUT_S = 60.0
_RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Output:
    """One object the target receives: its name and where the service keeps it."""

    name: str
    key: str
    content_type: str
    size: int | None = None
    sha256: str | None = None


def outputs(job: Job) -> list[Output]:
    """What a job's target receives before the manifest: nothing unless it completed."""
    if job.status is not JobStatus.COMPLETED or job.result is None:
        return []
    found = [Output(RESULT_OUTPUT, job_result_key(job), "application/json")]
    found += [
        Output(a.name, artifact_key(job.job_id, a.name), a.content_type, a.size, a.sha256)
        for a in job.result.artifacts
    ]
    return found


def manifest(job: Job, written: list[dict[str, Any]], skipped: list[str]) -> bytes:
    """The manifest: the same bytes on every delivery of the same job (no delivery time)."""
    body = {
        "schema": "pdfrelay.target-manifest/1",
        "job_id": job.job_id,
        "status": job.status.value,
        "error": job.error.model_dump() if job.error else None,
        "batch_id": job.batch_id,
        "client_ref": job.client_ref,
        "filename": job.filename,
        "page_count": job.result.page_count if job.result else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "outputs": written,
        "skipped": skipped,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def job_prefix(config: TargetConfig, job_id: str) -> str:
    prefix = config.prefix
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"{prefix}{job_id}/"


class TargetWriter:
    """What writes to targets, per process: one HTTP session (SSRF-checked, for presigned
    URLs) and an S3 client per operator destination with an endpoint or keys of its own (made
    when first used); `close` releases them all."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._settings = settings
        self._storage = storage
        self._policy = SsrfPolicy(settings.webhook_allowed_networks)
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[tuple[str, str], Storage] = {}

    async def __aenter__(self) -> TargetWriter:
        self._session = aiohttp.ClientSession(
            connector=SsrfConnector(self._policy, limit=32),
            timeout=aiohttp.ClientTimeout(total=PUT_TIMEOUT_S),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def storage_for(self, tenant: str, name: str, config: TargetConfig) -> Storage:
        """The S3 client that writes to `config` (the service's own unless it names another
        endpoint or keys)."""
        if config.endpoint is None and config.access_key is None and config.secret_key is None:
            return self._storage
        client = self._clients.get((tenant, name))
        if client is None:
            own = self._settings
            settings = own.model_copy(
                update={
                    "s3_bucket": config.bucket,
                    "s3_access_key": config.access_key or own.s3_access_key,
                    "s3_secret_key": config.secret_key or own.s3_secret_key,
                    "s3_region": config.region or own.s3_region,
                }
            )
            client = Storage(settings, config.endpoint or self._storage.endpoint, threads=4)
            self._clients[(tenant, name)] = client
        return client

    async def put_url(self, url: str, data: bytes, content_type: str) -> None:
        """PUT `data` to a presigned URL, checked against the SSRF policy now again.

        Raises:
            TransientError: unreachable, timed out, or a status worth retrying (408, 429, 5xx).
            PermanentError: TARGET_URL_REFUSED (policy) or TARGET_UNREACHABLE (another status).
        """
        assert self._session is not None, "use TargetWriter as an async context manager"
        shown = _without_query(url)
        try:
            host, _port, addresses = await self._policy.resolve_checked(url)
            with pinned(host, addresses):
                async with self._session.put(
                    url,
                    data=data,
                    headers={"Content-Type": content_type},
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
        except PermanentError as exc:
            if exc.code == ErrorCode.WEBHOOK_URL_REFUSED:
                raise target_refused(exc.message) from exc
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientError(f"{shown} unreachable: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            return
        message = f"{shown} answered HTTP {status}"
        if status in _RETRIED_STATUSES:
            raise TransientError(message)
        raise PermanentError(message, ErrorCode.TARGET_UNREACHABLE)


def target_refused(message: str) -> PermanentError:
    """Re-word an SSRF refusal (its `webhook URL refused:` prefix) for a target URL."""
    reason = message.removeprefix("webhook URL refused: ")
    return PermanentError(f"target URL refused: {reason}", ErrorCode.TARGET_URL_REFUSED)


def _without_query(url: str) -> str:
    """A presigned URL as it may be shown: scheme, host and path (the query is its signature)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def _to_destination(
    ctx: Context, writer: TargetWriter, job: Job, target: JobTarget
) -> tuple[str, int]:
    assert target.name is not None
    config = ctx.settings.target(job.tenant, target.name)
    if config is None:  # the operator took it away after the job was accepted
        raise PermanentError(
            f"the destination {target.name!r} is no longer configured", ErrorCode.TARGET_NOT_ALLOWED
        )
    client = writer.storage_for(job.tenant, target.name, config)
    prefix = job_prefix(config, job.job_id)
    location = f"s3://{config.bucket}/{prefix}"
    try:
        try:
            await client.stat(prefix + MANIFEST, bucket=config.bucket)
        except ObjectNotFound:
            pass
        else:
            # A delivery that crashed after its manifest: everything is there already.
            found = await asyncio.gather(
                *(_exists(client, config.bucket, prefix + o.name) for o in outputs(job))
            )
            return location, sum(found) + 1
        written: list[dict[str, Any]] = []
        for out in outputs(job):
            data = await ctx.storage.get_bytes(out.key)
            await client.put_bytes(prefix + out.name, data, out.content_type, bucket=config.bucket)
            written.append(_listed(out, len(data), key=prefix + out.name))
        await client.put_bytes(
            prefix + MANIFEST, manifest(job, written, []), "application/json", bucket=config.bucket
        )
    except ObjectNotFound as exc:
        raise PermanentError(
            f"the destination bucket {config.bucket!r} does not exist", ErrorCode.TARGET_UNREACHABLE
        ) from exc
    except PermanentError as exc:
        cause = exc.message.rpartition(": ")[2]
        raise PermanentError(
            f"the destination refused the write ({cause})", ErrorCode.TARGET_UNREACHABLE
        ) from exc
    return location, len(written) + 1


async def _exists(client: Storage, bucket: str, key: str) -> bool:
    try:
        await client.stat(key, bucket=bucket)
    except ObjectNotFound:
        return False
    return True


def _listed(out: Output, size: int, **where: str) -> dict[str, Any]:
    return {
        "name": out.name,
        "size": size,
        "sha256": out.sha256,
        "content_type": out.content_type,
        **where,
    }


async def _to_urls(ctx: Context, writer: TargetWriter, job: Job, urls: dict[str, str]) -> int:
    written: list[dict[str, Any]] = []
    skipped: list[str] = []
    for out in outputs(job):
        url = urls.get(out.name)
        if url is None:
            skipped.append(out.name)
            continue
        data = await ctx.storage.get_bytes(out.key)
        await writer.put_url(url, data, out.content_type)
        written.append(_listed(out, len(data)))
    await writer.put_url(urls[MANIFEST], manifest(job, written, skipped), "application/json")
    return len(written) + 1


async def _to_outbox(ctx: Context, job: Job) -> tuple[str, int]:
    """The door's own destination (the object drop's `outbox/`), written by the door's code
    (its names are the door's): the same bytes to the same keys on every delivery."""
    door = ctx.doors.get(job.door)
    if door is None:
        raise PermanentError(f"the {job.door} door has no outbox", ErrorCode.TARGET_NOT_ALLOWED)
    try:
        return await door.write_outbox(ctx, job)
    except ObjectNotFound as exc:
        raise PermanentError(
            "an output of the job is no longer stored", ErrorCode.TARGET_UNREACHABLE
        ) from exc


async def deliver(ctx: Context, writer: TargetWriter, task: DeliveryTask, tries: int) -> None:
    """Write the job's outputs and manifest to its target and settle it (one task).

    `tries`: transient failures of this task so far; once the budget is spent, the next one
    settles the target `failed` instead of being retried.

    Raises:
        TransientError: the target (or the service's storage) failed, and the budget allows a
            retry: the task goes to the backoff queue.
    """
    try:
        job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    except JobNotFound:
        log.info("job %s is gone (retention): nothing to deliver", task.job_id)
        return
    target = job.target
    if target is None or not job.status.terminal:
        return
    if target.state != "pending":
        await lifecycle.announce_target(ctx, job)  # a redelivery: the same event again
        return
    try:
        if target.kind == "destination":
            location, objects = await _to_destination(ctx, writer, job, target)
        elif target.kind == "outbox":
            location, objects = await _to_outbox(ctx, job)
        else:
            assert target.urls is not None
            objects = await _to_urls(ctx, writer, job, target.urls)
            location = _without_query(target.urls[MANIFEST])
        settled = target.model_copy(
            update={
                "state": "delivered",
                "location": location,
                "objects": objects,
                "urls": None,
                "settled_at": utcnow(),
            }
        )
    except TransientError as exc:
        if tries < ctx.settings.transient_retry_budget:
            raise
        settled = _failed(
            target, ErrorCode.TARGET_UNREACHABLE, f"gave up after {tries + 1} attempts: {exc}"
        )
    except PermanentError as exc:
        settled = _failed(target, exc.code, exc.message)
    await lifecycle.target_settled(ctx, job, rev, settled)


async def given_up(ctx: Context, task: DeliveryTask) -> None:
    """A delivery task parked in `pdfrelay.targets.dead` (its handler crashed on every attempt):
    the target is settled `failed`, so the job's record does not say `pending` for ever."""
    try:
        job, rev = await ctx.jobs.get_revision(task.job_id, task.tenant)
    except JobNotFound:
        return
    if job.target is None or job.target.state != "pending":
        return
    log.error("job %s: the delivery to its target crashed on every attempt", job.job_id)
    settled = _failed(
        job.target, ErrorCode.INTERNAL, "the delivery to the target failed on every attempt"
    )
    await lifecycle.target_settled(ctx, job, rev, settled)


def _failed(target: JobTarget, code: str, message: str) -> JobTarget:
    return target.model_copy(
        update={
            "state": "failed",
            "error": JobError(code=code, message=message),
            "urls": None,
            "settled_at": utcnow(),
        }
    )

"""Secretary compatibility: the seed's PDF endpoints and job routes, answered by pdfrelay jobs.

Same auth, tenants, limits and queue as /v1; only the shapes differ (shared/seed_payloads).
A client's `jobId` names the job towards that client: it is the job's idempotency key (in a
namespace no `Idempotency-Key` header can reach) and its `client_ref`, while the job keeps a
pdfrelay id, so a client-chosen string never becomes part of a storage key or queue name.
"""

from __future__ import annotations

import functools
import os
from urllib.parse import parse_qsl

from aiohttp import web

from handlers.http.bodies import CHUNK, read_multipart
from handlers.http.common import (
    CTX,
    MAX_FIELD_BYTES,
    RETRY_AFTER_S,
    SUBMITTER,
    Handler,
    send_object,
    tenant_of,
    wait_for_end,
    webhook_spec,
)
from shared.doors.seed_payloads import (
    acknowledgement,
    archive_name,
    client_job_id,
    envelope,
    error_body,
    load_result,
    options_from_form,
    terminal_payload,
    url_filename,
    wait_seconds,
)
from shared.errors import ErrorCode, PdfRelayError, PermanentError, http_status
from shared.intake.submit import Submission
from shared.intake.uploads import Spooled
from shared.jobs.records import artifact_key
from shared.models import Job, JobStatus

SEED_KEY_PREFIX = "seed\0"
"""Idempotency namespace of `jobId`s: a header cannot carry NUL, so no /v1 key collides."""


def seed_errors(handler: Handler) -> Handler:
    """Errors in the seed's shape `{"status": "error", "error": {"code", "message"}}`."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PdfRelayError as exc:
            status = http_status(exc.code)
            return web.json_response(
                error_body(str(exc.code), exc.message),
                status=status,
                headers={"Retry-After": RETRY_AFTER_S} if status == 503 else None,
            )

    return wrapped


@seed_errors
async def process_upload(request: web.Request) -> web.StreamResponse:
    """POST /api/pdf/process: multipart `file` plus the seed's fields."""
    tenant = tenant_of(request)
    if request.content_type != "multipart/form-data":
        raise PermanentError(
            "send multipart/form-data with a 'file' part", ErrorCode.UNSUPPORTED_MEDIA_TYPE
        )
    spooled, fields, filename = await read_multipart(request, request.app[CTX])
    try:
        if spooled is None:
            raise PermanentError("the form has no 'file' part", ErrorCode.INVALID_REQUEST)
        return await _accept(request, tenant, fields, spooled=spooled, filename=filename)
    finally:
        if spooled is not None:
            os.unlink(spooled.path)


@seed_errors
async def process_url(request: web.Request) -> web.StreamResponse:
    """POST /api/pdf/process-url: form field `url` plus the seed's fields."""
    tenant = tenant_of(request)
    fields = await _url_form(request)
    if not fields.get("url"):
        raise PermanentError("the form has no 'url'", ErrorCode.INVALID_REQUEST)
    return await _accept(request, tenant, fields, url=fields["url"])


async def _url_form(request: web.Request) -> dict[str, str]:
    if request.content_type == "multipart/form-data":
        spooled, fields, _ = await read_multipart(request, request.app[CTX])
        if spooled is not None:
            os.unlink(spooled.path)
            raise PermanentError(
                "process-url takes a 'url'; upload files to /api/pdf/process",
                ErrorCode.INVALID_REQUEST,
            )
        return fields
    if request.content_type != "application/x-www-form-urlencoded":
        raise PermanentError("send a form with a 'url' field", ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    body = b""
    while chunk := await request.content.read(CHUNK):
        body += chunk
        if len(body) > MAX_FIELD_BYTES:
            raise PermanentError("the form is too long", ErrorCode.INVALID_REQUEST)
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


async def _accept(
    request: web.Request,
    tenant: str,
    fields: dict[str, str],
    *,
    spooled: Spooled | None = None,
    filename: str | None = None,
    url: str | None = None,
) -> web.Response:
    """Queue the job; answer the seed's 202, or its result when `wait_ms` sees the job end."""
    ctx = request.app[CTX]
    job_ref = client_job_id(fields.get("jobId"))
    wait_s = wait_seconds(fields.get("wait_ms"), ctx.settings.max_wait_s)
    sub = Submission(
        tenant=tenant,
        door="seed",
        options=options_from_form(fields),
        spool_path=spooled.path if spooled else None,
        sha256=spooled.sha256 if spooled else None,
        size=spooled.size if spooled else None,
        url=url,
        webhook=await webhook_spec(
            ctx.settings, fields.get("callback_url"), fields.get("callback_token")
        ),
        client_ref=job_ref,
        filename=filename or (url_filename(url) if url else None),
        idempotency_key=(
            SEED_KEY_PREFIX + job_ref if job_ref else request.headers.get("Idempotency-Key") or None
        ),
    )
    job, _ = await request.app[SUBMITTER].submit(ctx, sub)
    if wait_s > 0 and not job.status.terminal:
        job = await wait_for_end(request, job, wait_s)
    if wait_s > 0 and job.status.terminal:
        payload = terminal_payload(job, await load_result(ctx, job), ctx.settings.base_url)
        # The Secretary answered a failed synchronous run with 400.
        return web.json_response(payload, status=200 if job.status is JobStatus.COMPLETED else 400)
    return web.json_response(
        acknowledgement(job, job.webhook_url),
        status=202,
        headers={"Location": f"/api/jobs/{job.job_id}"},
    )


async def _find(request: web.Request) -> Job:
    """The job by the client's `jobId` or by its pdfrelay id; 404 across tenants."""
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    ident = request.match_info["job_id"]
    aliased = await ctx.jobs.find_idempotent(tenant, SEED_KEY_PREFIX + ident)
    return await ctx.jobs.get(aliased or ident, tenant)


@seed_errors
async def get_job(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}: `{"status": "success", "data": <job>}`; the token is never stored."""
    ctx = request.app[CTX]
    job = await _find(request)
    hook = await ctx.jobs.webhook_state(job.job_id) if job.webhook_url else None
    result = await load_result(ctx, job)
    return web.json_response(envelope(job, hook, result, ctx.settings.base_url))


@seed_errors
async def download_archive(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/download-archive: the images (or page images) ZIP."""
    job = await _find(request)
    if not job.status.terminal:
        return web.json_response(
            {"status": "processing", "message": "the archive is not ready yet; try again later"},
            status=202,
            headers={"Retry-After": RETRY_AFTER_S},
        )
    name = archive_name(job)
    if name is None:
        raise PermanentError("the job has no image archive", ErrorCode.NOT_FOUND)
    return await send_object(
        request, artifact_key(job.job_id, name), "application/zip", attachment=name
    )

"""The /v1 job views: submit, status (long-poll), result, artifacts, webhook redelivery."""

from __future__ import annotations

import os

from aiohttp import web
from pydantic import ValidationError

from handlers import jobs_api
from handlers.http.bodies import json_body, read_multipart
from handlers.http.common import (
    CTX,
    SUBMITTER,
    brief,
    options,
    send_object,
    tenant_of,
    wait_for_end,
    wait_seconds,
    webhook_spec,
)
from shared.errors import (
    ErrorCode,
    PermanentError,
)
from shared.intake import limits
from shared.intake.submit import Submission
from shared.intake.targets import resolve_target
from shared.jobs.records import artifact_key, job_result_key, public_view
from shared.models import Source, WebhookRedeliver


async def create_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    idem = request.headers.get("Idempotency-Key") or None
    limits.check_length("Idempotency-Key", idem, limits.MAX_IDEMPOTENCY_KEY_CHARS)
    ctype = request.content_type
    if ctype == "multipart/form-data":
        # Without an idempotency key nothing here needs the file's sha256: the extract handler
        # takes it (for the cache) where it reads the file anyway, off the upload's path.
        spooled, fields, filename = await read_multipart(request, ctx, digest=idem is not None)
        try:
            if spooled is None:
                raise PermanentError("the form has no 'file' part", ErrorCode.INVALID_REQUEST)
            limits.check_length("client_ref", fields.get("client_ref"), limits.MAX_CLIENT_REF_CHARS)
            limits.check_length("the file name", filename, limits.MAX_FILENAME_CHARS)
            sub = Submission(
                tenant=tenant,
                door="http",
                options=options(fields.get("options")),
                spool_path=spooled.path,
                sha256=spooled.sha256,
                size=spooled.size,
                webhook=await webhook_spec(
                    ctx.settings,
                    fields.get("webhook_url"),
                    fields.get("webhook_token"),
                    fields.get("webhook_progress"),
                ),
                client_ref=fields.get("client_ref"),
                filename=filename,
                idempotency_key=idem,
                target=await resolve_target(ctx.settings, tenant, fields.get("target")),
            )
            job, created = await request.app[SUBMITTER].submit(ctx, sub)
        finally:
            if spooled is not None:
                os.unlink(spooled.path)
    elif ctype == "application/json":
        sub = await _json_submission(request, tenant, idem)
        job, created = await request.app[SUBMITTER].submit(ctx, sub)
    else:
        raise PermanentError(
            "send multipart/form-data with a 'file' part, or application/json with a 'source'",
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
    # A job just created has no webhook state to read yet.
    body = (
        public_view(job, None, ctx.settings.base_url)
        if created
        else await ctx.jobs.view(job, ctx.settings.base_url)
    )
    return web.json_response(body, status=202, headers={"Location": f"/v1/jobs/{job.job_id}"})


async def _json_submission(request: web.Request, tenant: str, idem: str | None) -> Submission:
    payload = limits.loads(await json_body(request), "the body", ErrorCode.INVALID_REQUEST)
    if not isinstance(payload, dict):
        raise PermanentError("the body must be a JSON object", ErrorCode.INVALID_REQUEST)
    try:
        source = Source.model_validate(payload.get("source"))
    except ValidationError as exc:
        raise PermanentError(f"invalid source: {brief(exc)}", ErrorCode.INVALID_REQUEST) from exc
    hook = payload.get("webhook") or {}
    if not isinstance(hook, dict):
        raise PermanentError("webhook must be an object", ErrorCode.INVALID_REQUEST)
    client_ref = payload.get("client_ref")
    if client_ref is not None and not isinstance(client_ref, (str, int)):
        raise PermanentError("client_ref must be a string", ErrorCode.INVALID_REQUEST)
    client_ref = str(client_ref) if client_ref is not None else None
    limits.check_length("client_ref", client_ref, limits.MAX_CLIENT_REF_CHARS)
    if source.s3 is not None:
        limits.check_source(request.app[CTX].settings, tenant, source.s3.bucket, source.s3.key)
    return Submission(
        tenant=tenant,
        door="http",
        options=options(payload.get("options")),
        s3_bucket=source.s3.bucket if source.s3 else None,
        s3_key=source.s3.key if source.s3 else None,
        url=source.url,
        webhook=await webhook_spec(
            request.app[CTX].settings, hook.get("url"), hook.get("token"), hook.get("progress")
        ),
        client_ref=client_ref,
        idempotency_key=idem,
        target=await resolve_target(request.app[CTX].settings, tenant, payload.get("target")),
    )


async def get_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    job_id = request.match_info["job_id"]
    job = await ctx.jobs.get(job_id, tenant)
    wait = wait_seconds(request, ctx)
    if wait > 0 and not job.status.terminal:
        job = await wait_for_end(request, job, wait)
    view = await ctx.jobs.view(job, ctx.settings.base_url)
    return web.json_response(await jobs_api.with_estimate(request, job, view))


async def get_result(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    if job.status.value != "completed":
        raise PermanentError(
            f"the job is {job.status.value}, it has no result", ErrorCode.NOT_FOUND
        )
    return await send_object(request, job_result_key(job), "application/json")


async def get_artifact(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    name = request.match_info["name"]
    arts = {a.name: a for a in (job.result.artifacts if job.result else ())}
    if name not in arts:
        raise PermanentError(f"the job has no artifact {name!r}", ErrorCode.NOT_FOUND)
    return await send_object(
        request, artifact_key(job.job_id, name), arts[name].content_type, attachment=name
    )


async def redeliver_webhook(request: web.Request) -> web.Response:
    """Re-send a finished job's terminal webhook (same webhook-id and body, attempts reset)."""
    ctx = request.app[CTX]
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    if job.webhook_url is None:
        raise PermanentError("the job has no webhook", ErrorCode.NOT_FOUND)
    if not job.status.terminal:
        raise PermanentError(f"the job is {job.status.value}, not finished", ErrorCode.CONFLICT)
    state = await ctx.jobs.webhook_state(job.job_id)
    if state is None or state.sealed is None:
        raise PermanentError(
            "the job's webhook has not been dispatched yet; try again shortly", ErrorCode.CONFLICT
        )
    if state.state in ("pending", "retrying"):
        raise PermanentError(
            f"a delivery of the job's webhook is in progress ({state.state})", ErrorCode.CONFLICT
        )
    # Only the webhooks handler holds the secret that opens the stored delivery: ask it.
    await ctx.broker.publish(
        ctx.topology.webhooks_exchange,
        ctx.topology.webhooks_redeliver,
        WebhookRedeliver(job_id=job.job_id),
    )
    body = await ctx.jobs.view(job, ctx.settings.base_url)
    return web.json_response(body, status=202)

"""What the HTTP views share: the app's keys, the error shape, the tenant of a request, options
and webhook parsing, waiting for a job's end, streaming a stored object."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared.adapters.storage import ObjectNotFound
from shared.doors.seed_payloads import error_body
from shared.errors import (
    ErrorCode,
    PermanentError,
    TransientError,
    http_status,
)
from shared.intake import limits
from shared.intake.submit import Submitter
from shared.jobs.watch import JobWatcher, until_ended
from shared.models import ExtractOptions, Job, WebhookSpec
from shared.runtime.context import Context
from shared.settings import Settings
from shared.webhooks.ssrf import SsrfPolicy, check_url_syntax

log = logging.getLogger("handlers.ingress")  # the ingress's logger, as operators filter it

CTX = web.AppKey("ctx", Context)
WATCHER = web.AppKey("watcher", JobWatcher)
SUBMITTER = web.AppKey("submitter", Submitter)
TENANTS = web.AppKey("tenants", dict[str, str])

RETRY_AFTER_S = "5"
MAX_FIELD_BYTES = 64 * 1024
"""Form fields of the seed door's urlencoded bodies."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    code: ErrorCode, message: str, headers: dict[str, str] | None = None, *, seed: bool = False
) -> web.Response:
    """The documented JSON error shape (the Secretary's `error_body` for /api/ routes)."""
    status = http_status(code)
    hdrs = dict(headers or {})
    if status == 503:
        hdrs.setdefault("Retry-After", RETRY_AFTER_S)
    body = (
        error_body(str(code), message)
        if seed
        else {"error": {"code": str(code), "message": message}}
    )
    return web.json_response(body, status=status, headers=hdrs)


def tenant_of(request: web.Request) -> str:
    """The tenant the request's API key belongs to ('default' when keys are off)."""
    tenants = request.app[TENANTS]
    if not tenants:
        return "default"
    auth = request.headers.get("Authorization", "")
    scheme, _, key = auth.partition(" ")
    tenant = tenants.get(key.strip()) if scheme.lower() == "bearer" else None
    if tenant is None:
        raise PermanentError("a valid API key is required", ErrorCode.UNAUTHORIZED)
    return tenant


def options(raw: Any) -> ExtractOptions:
    if isinstance(raw, str):
        raw = limits.loads(raw, "options", ErrorCode.INVALID_OPTIONS) if raw.strip() else {}
    try:
        return ExtractOptions.model_validate(raw or {})
    except RecursionError as exc:
        raise PermanentError("options are nested too deeply", ErrorCode.INVALID_OPTIONS) from exc
    except (ValueError, ValidationError) as exc:
        raise PermanentError(f"invalid options: {brief(exc)}", ErrorCode.INVALID_OPTIONS) from exc


def brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


async def webhook_spec(
    settings: Settings, url: object, token: object, progress: object = None
) -> WebhookSpec | None:
    """The job's webhook, its URL checked against the SSRF policy now (and again at delivery)."""
    if not url:
        return None
    if not isinstance(url, str) or not (token is None or isinstance(token, str)):
        raise PermanentError("the webhook url and token must be strings", ErrorCode.INVALID_REQUEST)
    limits.check_length("the webhook url", url, limits.MAX_WEBHOOK_URL_CHARS)
    limits.check_length("the webhook token", token, limits.MAX_WEBHOOK_TOKEN_CHARS)
    check_url_syntax(url)
    limits.check_webhook_url(url)
    try:
        await SsrfPolicy(settings.webhook_allowed_networks).resolve_checked(url)
    except TransientError as exc:
        raise PermanentError(
            f"webhook URL refused: {exc.message}", ErrorCode.WEBHOOK_URL_REFUSED
        ) from exc
    if isinstance(progress, str):
        progress = progress.strip().lower() in ("true", "1", "yes", "on")
    if not (progress is None or isinstance(progress, bool)):
        raise PermanentError("webhook progress must be true or false", ErrorCode.INVALID_REQUEST)
    return WebhookSpec(url=url, token=token or None, progress=bool(progress))


def wait_seconds(request: web.Request, ctx: Context) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError as exc:
        raise PermanentError("wait must be a number of seconds", ErrorCode.INVALID_REQUEST) from exc
    if wait < 0:
        raise PermanentError("wait must not be negative", ErrorCode.INVALID_REQUEST)
    return min(wait, ctx.settings.max_wait_s)


async def wait_for_end(request: web.Request, job: Job, wait: float) -> Job:
    ctx = request.app[CTX]
    async with request.app[WATCHER].listen(job.job_id) as events:
        # Re-read after subscribing, so an end that happened in between is not missed.
        job = await ctx.jobs.get(job.job_id, job.tenant)
        return await until_ended(ctx.jobs, job, events, wait)


async def send_object(
    request: web.Request, key: str, content_type: str, attachment: str | None = None
) -> web.StreamResponse:
    storage = request.app[CTX].storage
    try:
        info = await storage.stat(key)
        chunks = await storage.stream(key)
    except ObjectNotFound as exc:
        raise PermanentError("the stored result is missing", ErrorCode.NOT_FOUND) from exc
    try:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.content_length = info.size
        if attachment:
            resp.headers["Content-Disposition"] = f'attachment; filename="{attachment}"'
        await resp.prepare(request)
        while (chunk := await storage.read_chunk(chunks)) is not None:
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionResetError:
        # The client went away mid-download: its loss, not an error of ours.
        log.info("the client of %s %s disconnected mid-download", request.method, request.path)
    finally:
        await storage.close_stream(chunks)
    return resp

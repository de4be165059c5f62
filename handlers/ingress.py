"""HTTP ingress: accept uploads and JSON submissions, answer job status, serve results."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from handlers import jobs_api
from shared import limits
from shared.broker import publish
from shared.context import Context
from shared.errors import (
    ErrorCode,
    PdfRelayError,
    PermanentError,
    StartupError,
    TransientError,
    http_status,
)
from shared.http_server import IngressRunner
from shared.jobs import artifact_key, job_result_key, public_view
from shared.metrics import CONTENT_TYPE_LATEST
from shared.models import ExtractOptions, Job, Source, WebhookRedeliver, WebhookSpec
from shared.openapi import ROUTES as DOCS_ROUTES
from shared.quota import QuotaExceeded
from shared.seed_payloads import error_body
from shared.settings import Settings
from shared.ssrf import SsrfPolicy, check_url_syntax
from shared.storage import ObjectNotFound
from shared.submit import Submission, Submitter
from shared.tessdata import ocr_languages
from shared.tracing import server_middleware
from shared.uploads import Spooled, spool
from shared.watch import JobWatcher

log = logging.getLogger(__name__)

CTX = web.AppKey("ctx", Context)
WATCHER = web.AppKey("watcher", JobWatcher)
SUBMITTER = web.AppKey("submitter", Submitter)
TENANTS = web.AppKey("tenants", dict[str, str])

RETRY_AFTER_S = "5"
CHUNK = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024
"""Form fields of the seed door's urlencoded bodies."""

T = TypeVar("T")

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


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    seed = request.path.startswith("/api/")
    try:
        return await handler(request)
    except QuotaExceeded as exc:
        return error_response(
            exc.code, exc.message, jobs_api.quota_headers(request, exc), seed=seed
        )
    except PdfRelayError as exc:
        return error_response(exc.code, exc.message, seed=seed)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(ErrorCode.NOT_FOUND, "no such resource", seed=seed)
        if exc.status == 413:
            return error_response(
                ErrorCode.FILE_TOO_LARGE, "the request body is too large", seed=seed
            )
        if exc.status == 405:
            allow = exc.headers.get("Allow", "")
            return error_response(
                ErrorCode.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed here (allowed: {allow})",
                {"Allow": allow},
                seed=seed,
            )
        if exc.status >= 400:
            return error_response(ErrorCode.INVALID_REQUEST, exc.reason, seed=seed)
        raise
    except RecursionError:
        return error_response(
            ErrorCode.INVALID_REQUEST, "the request is nested too deeply", seed=seed
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ErrorCode.INTERNAL, "internal error", seed=seed)


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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(("/v1/", "/api/")):
        tenant_of(request)
    return await handler(request)


def _options(raw: Any) -> ExtractOptions:
    if isinstance(raw, str):
        raw = limits.loads(raw, "options", ErrorCode.INVALID_OPTIONS) if raw.strip() else {}
    try:
        return ExtractOptions.model_validate(raw or {})
    except RecursionError as exc:
        raise PermanentError("options are nested too deeply", ErrorCode.INVALID_OPTIONS) from exc
    except (ValueError, ValidationError) as exc:
        raise PermanentError(f"invalid options: {_brief(exc)}", ErrorCode.INVALID_OPTIONS) from exc


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


async def _webhook(
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


async def _idle(settings: Settings, step: Awaitable[T]) -> T:
    """One read of a request body, cut off after `upload_idle_timeout_s` without data."""
    try:
        async with asyncio.timeout(settings.upload_idle_timeout_s):
            return await step
    except TimeoutError as exc:
        raise PermanentError(
            f"the request body sent nothing for {settings.upload_idle_timeout_s:g} s",
            ErrorCode.REQUEST_TIMEOUT,
        ) from exc


async def _part_text(part: BodyPartReader, settings: Settings) -> str:
    limit = settings.max_form_field_bytes
    data = b""
    while len(data) <= limit and (chunk := await _idle(settings, part.read_chunk(CHUNK))):
        data += chunk
    if len(data) > limit:
        raise PermanentError(
            f"form field {str(part.name)[:64]!r} is longer than {limit} bytes",
            ErrorCode.REQUEST_TOO_LARGE,
        )
    return data.decode("utf-8", errors="replace")


async def _part_chunks(part: BodyPartReader, settings: Settings) -> AsyncIterator[bytes]:
    while chunk := await _idle(settings, part.read_chunk(CHUNK)):
        yield chunk


async def _next_part(
    reader: MultipartReader, settings: Settings
) -> BodyPartReader | MultipartReader | None:
    """The next part of a form; a malformed one is the client's error (400), not ours (500)."""
    try:
        return await _idle(settings, reader.next())
    except (HttpProcessingError, ValueError) as exc:
        raise PermanentError(
            "malformed multipart body: a part's headers or boundary are invalid",
            ErrorCode.INVALID_REQUEST,
        ) from exc


async def _read_multipart(
    request: web.Request, ctx: Context, *, digest: bool = True
) -> tuple[Spooled | None, dict[str, str], str | None]:
    """`digest`: take the file's sha256 (for an idempotency key's same-request check)."""
    try:
        reader = await request.multipart()
    except ValueError as exc:  # no boundary
        raise PermanentError(f"malformed multipart body: {exc}", ErrorCode.INVALID_REQUEST) from exc
    fields: dict[str, str] = {}
    spooled: Spooled | None = None
    filename: str | None = None
    count = 0
    try:
        while (part := await _next_part(reader, ctx.settings)) is not None:
            if not isinstance(part, BodyPartReader):
                raise PermanentError("nested multipart is not supported", ErrorCode.INVALID_REQUEST)
            if part.name == "file":
                if spooled is not None:
                    raise PermanentError("one file per job", ErrorCode.INVALID_REQUEST)
                filename = part.filename
                spooled = await spool(
                    _part_chunks(part, ctx.settings),
                    ctx.settings.max_file_bytes,
                    ctx.settings.spool_dir,
                    digest=digest,
                )
            else:
                count += 1
                if count > ctx.settings.max_form_fields:
                    raise PermanentError(
                        f"the form has more than {ctx.settings.max_form_fields} fields",
                        ErrorCode.REQUEST_TOO_LARGE,
                    )
                text = await _part_text(part, ctx.settings)
                if part.name:
                    fields[part.name] = text
    except BaseException:
        if spooled is not None:
            os.unlink(spooled.path)
        raise
    return spooled, fields, filename


async def create_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    idem = request.headers.get("Idempotency-Key") or None
    limits.check_length("Idempotency-Key", idem, limits.MAX_IDEMPOTENCY_KEY_CHARS)
    ctype = request.content_type
    if ctype == "multipart/form-data":
        # Without an idempotency key nothing here needs the file's sha256: the extract handler
        # takes it (for the cache) where it reads the file anyway, off the upload's path.
        spooled, fields, filename = await _read_multipart(request, ctx, digest=idem is not None)
        try:
            if spooled is None:
                raise PermanentError("the form has no 'file' part", ErrorCode.INVALID_REQUEST)
            limits.check_length("client_ref", fields.get("client_ref"), limits.MAX_CLIENT_REF_CHARS)
            limits.check_length("the file name", filename, limits.MAX_FILENAME_CHARS)
            sub = Submission(
                tenant=tenant,
                door="http",
                options=_options(fields.get("options")),
                spool_path=spooled.path,
                sha256=spooled.sha256,
                size=spooled.size,
                webhook=await _webhook(
                    ctx.settings,
                    fields.get("webhook_url"),
                    fields.get("webhook_token"),
                    fields.get("webhook_progress"),
                ),
                client_ref=fields.get("client_ref"),
                filename=filename,
                idempotency_key=idem,
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
    payload = limits.loads(await _json_body(request), "the body", ErrorCode.INVALID_REQUEST)
    if not isinstance(payload, dict):
        raise PermanentError("the body must be a JSON object", ErrorCode.INVALID_REQUEST)
    try:
        source = Source.model_validate(payload.get("source"))
    except ValidationError as exc:
        raise PermanentError(f"invalid source: {_brief(exc)}", ErrorCode.INVALID_REQUEST) from exc
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
        options=_options(payload.get("options")),
        s3_bucket=source.s3.bucket if source.s3 else None,
        s3_key=source.s3.key if source.s3 else None,
        url=source.url,
        webhook=await _webhook(
            request.app[CTX].settings, hook.get("url"), hook.get("token"), hook.get("progress")
        ),
        client_ref=client_ref,
        idempotency_key=idem,
    )


async def _json_body(request: web.Request) -> bytes:
    """The JSON body, at most `max_json_bytes` (413 REQUEST_TOO_LARGE), read with idle limits."""
    settings = request.app[CTX].settings
    limit = settings.max_json_bytes
    too_large = PermanentError(
        f"the JSON body is larger than {limit} bytes", ErrorCode.REQUEST_TOO_LARGE
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    while chunk := await _idle(settings, request.content.read(CHUNK)):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def get_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    job_id = request.match_info["job_id"]
    job = await ctx.jobs.get(job_id, tenant)
    wait = _wait_seconds(request, ctx)
    if wait > 0 and not job.status.terminal:
        job = await _wait_for_end(request, job, wait)
    view = await ctx.jobs.view(job, ctx.settings.base_url)
    return web.json_response(await jobs_api.with_estimate(request, job, view))


def _wait_seconds(request: web.Request, ctx: Context) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError as exc:
        raise PermanentError("wait must be a number of seconds", ErrorCode.INVALID_REQUEST) from exc
    if wait < 0:
        raise PermanentError("wait must not be negative", ErrorCode.INVALID_REQUEST)
    return min(wait, ctx.settings.max_wait_s)


async def _wait_for_end(request: web.Request, job: Job, wait: float) -> Job:
    ctx = request.app[CTX]
    async with request.app[WATCHER].listen(job.job_id) as events:
        # Re-read after subscribing, so an end that happened in between is not missed.
        job = await ctx.jobs.get(job.job_id, job.tenant)
        try:
            async with asyncio.timeout(wait):
                while not job.status.terminal:
                    event = await events.get()
                    if event["type"] != "job.progress":
                        job = await ctx.jobs.get(job.job_id, job.tenant)
        except TimeoutError:
            job = await ctx.jobs.get(job.job_id, job.tenant)
    return job


async def get_result(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    if job.status.value != "completed":
        raise PermanentError(
            f"the job is {job.status.value}, it has no result", ErrorCode.NOT_FOUND
        )
    return await _send_object(request, job_result_key(job), "application/json")


async def get_artifact(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    name = request.match_info["name"]
    arts = {a.name: a for a in (job.result.artifacts if job.result else ())}
    if name not in arts:
        raise PermanentError(f"the job has no artifact {name!r}", ErrorCode.NOT_FOUND)
    return await _send_object(
        request, artifact_key(job.job_id, name), arts[name].content_type, attachment=name
    )


async def _send_object(
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
    await publish(
        ctx.channel,
        ctx.topology.webhooks_exchange,
        ctx.topology.webhooks_redeliver,
        WebhookRedeliver(job_id=job.job_id),
    )
    body = await ctx.jobs.view(job, ctx.settings.base_url)
    return web.json_response(body, status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this process (shared/metrics.py)."""
    body = await request.app[CTX].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    checks: dict[str, str] = {}
    try:
        await ctx.storage.ping()
        checks["storage"] = "ok"
    except TransientError as exc:
        checks["storage"] = exc.message
    # A robust connection is never "closed" while it reconnects: ask whether it is connected.
    connected = ctx.connection.connected.is_set() and not ctx.connection.is_closed
    checks["broker"] = "ok" if connected and ctx.channel.is_initialized else "down"
    ready = all(v == "ok" for v in checks.values())
    # Not a check: without OCR, `ocr: auto` jobs complete with the text layer and a warning.
    languages = await asyncio.to_thread(ocr_languages, ctx.settings.tessdata_dir)
    ocr = {"available": bool(languages), "languages": languages}
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks, "ocr": ocr},
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": RETRY_AFTER_S},
    )


def create_app(ctx: Context) -> web.Application:
    """The ingress application over an open context."""
    app = web.Application(
        middlewares=[server_middleware, errors_middleware, auth_middleware],
        client_max_size=ctx.settings.max_file_bytes + 1024 * 1024,
    )
    app[CTX] = ctx
    app[TENANTS] = ctx.settings.tenant_keys()
    app[SUBMITTER] = Submitter()
    app[WATCHER] = JobWatcher()

    async def watcher_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[WATCHER].start(ctx)
        yield
        await app[WATCHER].stop()

    app.cleanup_ctx.append(watcher_ctx)
    jobs_api.setup(app, ctx, app[WATCHER], tenant_of)  # list, cancel, events, retention
    app.add_routes(
        [
            web.post("/v1/jobs", create_job),
            web.get("/v1/jobs/{job_id}", get_job),
            web.get("/v1/jobs/{job_id}/result", get_result),
            web.get("/v1/jobs/{job_id}/artifacts/{name}", get_artifact),
            web.post("/v1/jobs/{job_id}/webhook/redeliver", redeliver_webhook),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            *DOCS_ROUTES,
        ]
    )
    from handlers.seed import ROUTES as SEED_ROUTES  # here: the seed module imports this one

    app.add_routes(SEED_ROUTES)
    return app


def _protocol_error(status: int, message: str) -> web.Response:
    """What aiohttp would answer in plain text (a request it cannot parse), in our shape."""
    return error_response(
        ErrorCode.INTERNAL if status >= 500 else ErrorCode.INVALID_REQUEST, message
    )


def runner(ctx: Context) -> web.AppRunner:
    """The ingress as `serve` runs it."""
    return IngressRunner(create_app(ctx), _protocol_error, access_log=None)


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Serve HTTP on the configured host and port until `stop` is set."""
    server = runner(ctx)
    await server.setup()
    try:
        site = web.TCPSite(server, ctx.settings.http_host, ctx.settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"pdfrelay ingress: cannot listen on {ctx.settings.http_host}:"
                f"{ctx.settings.http_port} ({exc.strerror or exc}): set PDFRELAY_HTTP_PORT "
                "to a free port"
            ) from exc
        log.info(
            "ingress listening on http://%s:%s", ctx.settings.http_host, ctx.settings.http_port
        )
        await stop.wait()
    finally:
        await server.cleanup()

"""HTTP ingress: the application over the route table (handlers/http/routes.py), its
middlewares and its server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from handlers import console, jobs_api
from handlers.http.common import (
    CTX,
    SUBMITTER,
    TENANTS,
    WATCHER,
    Handler,
    error_response,
    tenant_of,
)
from handlers.http.routes import ROUTES, api_document
from shared.api.openapi import DOCUMENT
from shared.api.server import IngressRunner
from shared.errors import (
    ErrorCode,
    PdfRelayError,
    QuotaExceeded,
    StartupError,
)
from shared.intake.submit import Submitter
from shared.jobs.watch import JobWatcher
from shared.obs.tracing import server_middleware
from shared.runtime.context import Context

log = logging.getLogger(__name__)


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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(("/v1/", "/api/")):
        tenant_of(request)
    return await handler(request)


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
    jobs_api.setup(app, ctx, app[WATCHER])  # list, cancel, events, retention
    console.setup(app, ctx)  # the web console's preview client and headers
    app.add_routes(r.route() for r in ROUTES)
    app[DOCUMENT] = api_document(ROUTES)
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

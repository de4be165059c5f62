"""The operations views: liveness, readiness, Prometheus metrics (the ingress and the
operations port of the other handlers serve the same ones)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from handlers.http.common import CTX, RETRY_AFTER_S
from shared.adapters.tessdata import ocr_languages
from shared.errors import (
    TransientError,
)
from shared.obs.metrics import CONTENT_TYPE_LATEST


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this process (shared/obs/metrics.py)."""
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

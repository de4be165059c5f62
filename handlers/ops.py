"""The operations port of handlers without HTTP: `/metrics`, `/healthz`, `/readyz`.

`pdfrelay run extract|webhooks|object-drop|requests` serve these on `PDFRELAY_METRICS_PORT`
(default 9100), for Prometheus and the Kubernetes probes; the ingress serves the same views on
its own port (and `pdfrelay dev`, which runs the ingress, only there).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from handlers.ingress import CTX, healthz, metrics, readyz
from shared.context import Context

log = logging.getLogger(__name__)


def create_app(ctx: Context) -> web.Application:
    """The operations application over an open context (the ingress's views, its key)."""
    app = web.Application()
    app[CTX] = ctx
    app.add_routes(
        [
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
    return app


async def serve(ctx: Context, stop: asyncio.Event) -> None:
    """Serve the operations port until `stop` is set."""
    runner = web.AppRunner(create_app(ctx), access_log=None)
    await runner.setup()
    try:
        # Probes and scrapes come from other hosts: bind where the ingress would.
        site = web.TCPSite(runner, ctx.settings.http_host, ctx.settings.metrics_port)
        await site.start()
        # (PDFRELAY_METRICS_PORT=0 picks a free port: handlers side by side on one host.)
        for address in runner.addresses:
            log.info("metrics and health on http://%s:%s", *address[:2])
        await stop.wait()
    finally:
        await runner.cleanup()

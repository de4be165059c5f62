"""The operations port of handlers without HTTP: `/metrics`, `/healthz`, `/readyz`.

`pdfrelay run extract|webhooks|object-drop` serve these on `PDFRELAY_METRICS_PORT` (unset:
extract 9100, webhooks 9101, object-drop 9102, so they can share a host), for Prometheus and
the Kubernetes probes; the ingress serves the same views on its own port (and `pdfrelay dev`,
which runs the ingress, only there).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from handlers.http.common import CTX
from handlers.http.routes import ROUTES
from shared.errors import StartupError
from shared.runtime.context import Context

log = logging.getLogger(__name__)


def create_app(ctx: Context) -> web.Application:
    """The operations application over an open context: the route table's `ops_port` entries
    (the ingress's views, its key)."""
    app = web.Application()
    app[CTX] = ctx
    app.add_routes(r.route() for r in ROUTES if r.ops_port)
    return app


async def serve(ctx: Context, stop: asyncio.Event, handler: str) -> None:
    """Serve the operations port of `handler` until `stop` is set.

    Raises:
        StartupError: the port is taken (or cannot be bound).
    """
    runner = web.AppRunner(create_app(ctx), access_log=None)
    await runner.setup()
    try:
        # Probes and scrapes come from other hosts: bind where the ingress would.
        host, port = ctx.settings.http_host, ctx.settings.metrics_port_for(handler)
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"pdfrelay run {handler}: cannot listen on {host}:{port} for metrics "
                f"({exc.strerror or exc}): set PDFRELAY_METRICS_PORT to a free port (0 picks one)"
            ) from exc
        # (PDFRELAY_METRICS_PORT=0 picks a free port: handlers side by side on one host.)
        for address in runner.addresses:
            log.info("metrics and health on http://%s:%s", *address[:2])
        await stop.wait()
    finally:
        await runner.cleanup()

"""The web console, served by the ingress at `/`: submit, watch, list, read, operate.

`setup(app, ctx, tenant_of)` adds its page, its assets and the API it needs beyond the job API
(page previews, the operations view). Nothing here imports PyMuPDF: previews are rendered by
the extract side (`handlers.console.render`), asked over the broker.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from handlers.console import ops, preview, static
from shared.context import Context


def setup(app: web.Application, ctx: Context, tenant_of: Callable[[web.Request], str]) -> None:
    """Register the console on the ingress `app`."""

    async def mark(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer of the ingress, API included: a browser never guesses a type.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")

    app.on_response_prepare.append(mark)
    app.add_routes(
        [*static.routes(), *preview.setup(app, ctx, tenant_of), *ops.routes(ctx, tenant_of)]
    )

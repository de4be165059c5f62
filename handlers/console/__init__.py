"""The web console, served by the ingress at `/`: submit, watch, list, read, operate.

Its routes (page, assets, page previews, the operations view) are entries of the route table
(handlers/http/routes.py); `setup(app, ctx)` adds what they need on the app. Nothing here
imports PyMuPDF: previews are rendered by the extract side (`handlers.console.render`), asked
over the broker.
"""

from __future__ import annotations

from aiohttp import web

from handlers.console import preview
from shared.runtime.context import Context


def setup(app: web.Application, ctx: Context) -> None:
    """What the console's routes need on the ingress `app`: the preview client, and nosniff on
    every answer (API included: a browser never guesses a type)."""

    async def mark(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")

    app.on_response_prepare.append(mark)
    preview.setup(app, ctx)

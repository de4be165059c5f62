"""The console's page and assets (package data under `static/`), with strict security headers."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def load_assets() -> dict[str, Asset]:
    """Every file of `static/` by name (read once, at start-up: a few kB)."""
    found: dict[str, Asset] = {}
    for entry in resources.files("handlers.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            found[entry.name] = Asset(body, TYPES[suffix], etag)
    return found


def _send(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        **SECURITY_HEADERS,
        "Content-Type": asset.content_type,
        # Revalidated every time (a 304 is cheap): a new version is never stale.
        "Cache-Control": "no-cache",
        "ETag": asset.etag,
    }
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers=headers)


async def index(request: web.Request) -> web.Response:
    """`GET /`: the console's page."""
    return _send(request, load_assets()["index.html"])


async def asset(request: web.Request) -> web.Response:
    """`GET /console/{name}`: one of its scripts, style sheets or images."""
    found = load_assets().get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    return _send(request, found)

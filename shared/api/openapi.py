"""The OpenAPI 3.1 document of the HTTP API, and the offline docs page that shows it.

An `Operation` describes one HTTP route: its parameters and its request and response models.
The route table (handlers/http/routes.py) pairs each with its view; the application is built
from that table and this document generated from the same entries and the pydantic models
(`shared/api/models.py`, `shared/models.py`), so the two cannot drift: a test proves every
served route is documented and nothing else.

`GET /docs` is Swagger UI from the `openapi-ui-bundles` package, served by us from the package
files (no CDN, no external validator badge, no inline script).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import openapi_ui_bundles
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared.api.models import (
    ErrorBody,
)

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
MULTIPART = "multipart/form-data"
FORM = "application/x-www-form-urlencoded"
BINARY: dict[str, Any] = {"type": "string", "contentMediaType": "application/octet-stream"}
TEXT: dict[str, Any] = {"type": "string"}
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One event of the stream: `event` is its type (`job.progress`, …), `id` its "
    "stable event id, `data` the job (as `GET /v1/jobs/{job_id}` shows it) as JSON text.",
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string"},
        "data": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

Location = Literal["query", "header"]
Refs = dict[Any, dict[str, Any]]
"""(model, mode) → its `$ref` in components/schemas."""


@dataclass(frozen=True)
class Param:
    """A query or header parameter (path parameters come from the path template)."""

    name: str
    location: Location
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Resp:
    status: int
    description: str
    model: type[BaseModel] | None = None
    content_type: str = JSON
    schema: dict[str, Any] | None = None
    """For bodies that are not a model (binary, text); None and no model: no body."""
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    responses: tuple[Resp, ...]
    description: str = ""
    params: tuple[Param, ...] = ()
    body: tuple[tuple[str, type[BaseModel]], ...] = ()
    """(content type, model) pairs the request body may be sent as."""
    auth: bool = False


PATH_PARAMS = {
    "job_id": "The job's id (32 hex digits); the seed routes also take the client's `jobId`.",
    "batch_id": "The batch's id (32 hex digits).",
    "name": "An artifact or asset name.",
    "page": "A page number (1-based).",
}
HEADERS = {
    "Location": "Where the job can be followed.",
    "Retry-After": "Seconds to wait before trying again.",
}
IDEMPOTENCY = Param(
    "Idempotency-Key", "header", "The same key (per tenant) returns the same job, never a second."
)
TRACEPARENT = Param(
    "traceparent",
    "header",
    "W3C trace context: the job's trace continues it (through the broker to the webhook).",
)


def errors(*statuses: int, model: type[BaseModel] = ErrorBody) -> tuple[Resp, ...]:
    text = {
        400: "The request is malformed.",
        401: "A valid API key is required (`Authorization: Bearer <key>`).",
        403: "`source.s3` names a source this tenant may not read (`SOURCE_NOT_ALLOWED`).",
        404: "No such job (or not this tenant's).",
        408: "The request body stopped arriving (`REQUEST_TIMEOUT`).",
        409: "The job is not in a state that allows this, or the idempotency key was used for "
        "another request (`IDEMPOTENCY_MISMATCH`).",
        413: "The file, the JSON body or a form field is larger than its limit.",
        415: "Not a PDF, or an unsupported content type.",
        422: "Invalid options, source or webhook URL.",
        429: "Over the tenant's quota; try again after `Retry-After`.",
        503: "The queue is full or a dependency is down; try again after `Retry-After`.",
    }
    return tuple(
        Resp(s, text[s], model, headers=("Retry-After",) if s in (429, 503) else ())
        for s in statuses
    )


SEED_400 = Resp(
    400,
    "`wait_ms` saw the job fail (its outcome), or the request is malformed (an error).",
    schema={
        "anyOf": [
            {"$ref": "#/components/schemas/SeedOutcome"},
            {"$ref": "#/components/schemas/SeedError"},
        ]
    },
)


_PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def route_key(method: str, path: str) -> tuple[str, str]:
    """(method, path with its parameter names blanked): how table and app routes are matched."""
    return method.lower(), _PARAM_RE.sub("{}", path)


def app_routes(router: web.UrlDispatcher) -> dict[tuple[str, str], str]:
    """The app's (method, path) routes, keyed by `route_key`, valued by the path template."""
    routes: dict[tuple[str, str], str] = {}
    for route in router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "OPTIONS", "*"):
            continue
        path = resource.canonical
        routes[route_key(route.method, path)] = _PARAM_RE.sub(r"{\1}", path)
    return routes


def _version() -> str:
    try:
        return metadata.version("pdfrelay")
    except metadata.PackageNotFoundError:
        return "0"


def build_openapi(operations: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI document of `operations` (the routes an application serves)."""
    ops = [(op, op.path) for op in operations]
    refs, defs = _schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    for op, path in ops:
        paths.setdefault(path, {})[op.method] = _operation(op, path, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "pdfrelay",
            "version": _version(),
            "summary": "Asynchronous PDF extraction: durable jobs, bounded workers, webhooks.",
            "description": (
                "Every request becomes a durable job; the outcome arrives by signed webhook "
                "(Standard Webhooks), as an event on the broker, or by polling. Errors are "
                '`{"error": {"code", "message"}}` with stable codes. With '
                "`PDFRELAY_API_KEYS` set, `/v1` and `/api` need `Authorization: Bearer <key>`."
            ),
            "license": {"name": "AGPL-3.0-only", "identifier": "AGPL-3.0-only"},
        },
        "tags": [
            {"name": "jobs", "description": "Submit, follow and fetch extraction jobs."},
            {"name": "seed", "description": "Drop-in compatibility with the Secretary's API."},
            {"name": "operations", "description": "Health, metrics and documentation."},
        ],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from PDFRELAY_API_KEYS (when set).",
                }
            },
        },
    }


def _schemas(
    ops: Iterable[tuple[Operation, str]],
) -> tuple[Refs, dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op, _ in ops:
        for _ctype, model in op.body:
            wanted[(model, "validation")] = None
        for resp in op.responses:
            if resp.model is not None:
                wanted[(resp.model, "serialization")] = None
    if not wanted:
        return {}, {}
    refs, top = models_json_schema(
        list(wanted), by_alias=True, ref_template="#/components/schemas/{model}"
    )
    return dict(refs), dict(top.get("$defs", {}))


def _operation(
    op: Operation,
    path: str,
    refs: Refs,
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_PARAMS.get(name, name),
            "schema": {"type": "string"},
        }
        for name in _PARAM_RE.findall(path)
    ]
    params.extend(
        {
            "name": p.name,
            "in": p.location,
            "required": p.required,
            "description": p.description,
            "schema": p.schema,
        }
        for p in op.params
    )
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": {str(r.status): _response(r, refs) for r in op.responses},
    }
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body:
        content: dict[str, Any] = {}
        for ctype, model in op.body:
            content[ctype] = {"schema": refs[(model, "validation")]}
            if ctype == MULTIPART and "file" in model.model_fields:
                content[ctype]["encoding"] = {"file": {"contentType": "application/pdf"}}
        out["requestBody"] = {"required": True, "content": content}
    if op.auth:
        # Empty alternative: without PDFRELAY_API_KEYS no key is needed.
        out["security"] = [{"bearerAuth": []}, {}]
    return out


def _response(r: Resp, refs: Refs) -> dict[str, Any]:
    out: dict[str, Any] = {"description": r.description}
    schema = refs[(r.model, "serialization")] if r.model is not None else r.schema
    if schema is not None:
        out["content"] = {r.content_type: {"schema": schema}}
    if r.headers:
        out["headers"] = {
            h: {"description": HEADERS[h], "schema": {"type": "string"}} for h in r.headers
        }
    return out


# --- the views ---------------------------------------------------------------------------------

SWAGGER_UI = Path(openapi_ui_bundles.swagger_ui.static_path)
ASSETS: dict[str, Path] = {
    name: SWAGGER_UI / name
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")
}
INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""
DOCS_HTML = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>pdfrelay API</title>
    <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="/docs/assets/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/assets/swagger-ui-bundle.js"></script>
    <script src="/docs/assets/init.js"></script>
  </body>
</html>
"""
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'"
)
ASSET_CACHE = "public, max-age=86400"


DOCUMENT = web.AppKey("openapi", dict[str, Any])
"""The application's OpenAPI document, generated once from its route table."""


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json."""
    return web.json_response(request.app[DOCUMENT])


async def docs_page(request: web.Request) -> web.Response:
    """GET /docs: Swagger UI over /openapi.json, every asset from this server."""
    return web.Response(
        text=DOCS_HTML, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP}
    )


async def docs_asset(request: web.Request) -> web.StreamResponse:
    """GET /docs/assets/{name}: only the files the page uses."""
    name = request.match_info["name"]
    if name == "init.js":
        return web.Response(
            text=INIT_JS,
            content_type="text/javascript",
            headers={"Cache-Control": ASSET_CACHE},
        )
    path = ASSETS.get(name)
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": ASSET_CACHE})

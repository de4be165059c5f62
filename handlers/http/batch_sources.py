"""`POST /v1/batches` as JSON: a list of sources (S3 keys, URLs), or every PDF under an S3 prefix
of a bucket the tenant may read; shared options and per-item overrides."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handlers.http.bodies import json_body
from handlers.http.common import CTX, brief, options, webhook_spec
from shared.adapters.storage import ObjectNotFound
from shared.errors import ErrorCode, PdfRelayError, PermanentError
from shared.intake import limits
from shared.intake.batch import BatchFile
from shared.intake.targets import resolve_target
from shared.models import ExtractOptions, JobTarget, S3Source, Source, WebhookSpec
from shared.settings import Settings

PREFIX_SCAN_LIMIT = 100_000
"""Objects listed under a prefix at most (PDFs and others) before the batch is refused."""


class PrefixSource(BaseModel):
    """Every object whose key ends in `.pdf` (any case) under `prefix` of `bucket`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(default="", max_length=1024)


@dataclass(frozen=True)
class JsonBatch:
    files: list[BatchFile]
    options: ExtractOptions
    webhook: WebhookSpec | None
    target: JobTarget | None


async def read_json_batch(request: web.Request, tenant: str) -> JsonBatch:
    """The batch a JSON body describes: `items` (each a `source`, optional `options` overrides,
    `client_ref`, `target`) or `prefix` (`{"bucket", "prefix"}`), with the shared `options`,
    `webhook` and `target`. An item that cannot be accepted is refused on its own (with why).

    Raises:
        PermanentError: the body as a whole is malformed (400), names a prefix the tenant may
            not read (403 SOURCE_NOT_ALLOWED), or holds too many items (413 BATCH_TOO_LARGE).
    """
    ctx = request.app[CTX]
    settings = ctx.settings
    payload = limits.loads(await json_body(request), "the body", ErrorCode.INVALID_REQUEST)
    if not isinstance(payload, dict):
        raise PermanentError("the body must be a JSON object", ErrorCode.INVALID_REQUEST)
    shared_raw = payload.get("options") or {}
    if not isinstance(shared_raw, dict):
        raise PermanentError("options must be an object", ErrorCode.INVALID_OPTIONS)
    opts = options(shared_raw)
    hook = payload.get("webhook") or {}
    if not isinstance(hook, dict):
        raise PermanentError("webhook must be an object", ErrorCode.INVALID_REQUEST)
    webhook = await webhook_spec(settings, hook.get("url"), hook.get("token"))
    target = await resolve_target(settings, tenant, payload.get("target"))
    items, prefix = payload.get("items"), payload.get("prefix")
    if (items is None) == (prefix is None):
        raise PermanentError(
            "a JSON batch has exactly one of 'items' (a list of sources) or 'prefix'",
            ErrorCode.INVALID_REQUEST,
        )
    if items is not None:
        if not isinstance(items, list) or not items:
            raise PermanentError("items must be a non-empty list", ErrorCode.INVALID_REQUEST)
        if len(items) > settings.max_batch_items:
            raise _too_many(settings)
        files = [await _item(settings, tenant, raw, shared_raw) for raw in items]
    else:
        files = await _prefix_items(request, tenant, prefix)
    return JsonBatch(files, opts, webhook, target)


def _too_many(settings: Settings) -> PermanentError:
    return PermanentError(
        f"a batch holds at most {settings.max_batch_items} items (PDFRELAY_MAX_BATCH_ITEMS)",
        ErrorCode.BATCH_TOO_LARGE,
    )


async def _item(
    settings: Settings, tenant: str, raw: object, shared_options: dict[str, Any]
) -> BatchFile:
    """One entry of `items`; what is wrong with it becomes its refusal, not the batch's."""
    if not isinstance(raw, dict):
        return _refused(None, None, "each item must be an object with a 'source'")
    client_ref = raw.get("client_ref")
    ref = None if client_ref is None else str(client_ref)[: limits.MAX_CLIENT_REF_CHARS]
    try:
        if client_ref is not None and not isinstance(client_ref, str | int):
            raise PermanentError("client_ref must be a string", ErrorCode.INVALID_REQUEST)
        limits.check_length("client_ref", ref, limits.MAX_CLIENT_REF_CHARS)
        try:
            source = Source.model_validate(raw.get("source"))
        except ValidationError as exc:
            raise PermanentError(
                f"invalid source: {brief(exc)}", ErrorCode.INVALID_REQUEST
            ) from exc
        name = _name_of(source)
        if source.s3 is not None:
            limits.check_source(settings, tenant, source.s3.bucket, source.s3.key)
        overrides = raw.get("options")
        if overrides is not None and not isinstance(overrides, dict):
            raise PermanentError("an item's options must be an object", ErrorCode.INVALID_OPTIONS)
        opts = options({**shared_options, **overrides}) if overrides else None
        target = await resolve_target(settings, tenant, raw.get("target"))
    except PdfRelayError as exc:
        return BatchFile(None, ref, exc)
    return BatchFile(name, ref, None, source=source, options=opts, target=target)


def _refused(name: str | None, ref: str | None, message: str) -> BatchFile:
    return BatchFile(name, ref, PermanentError(message, ErrorCode.INVALID_REQUEST))


def _name_of(source: Source) -> str | None:
    """The item's file name: the last segment of its key or URL path."""
    path = source.s3.key if source.s3 is not None else urlsplit(source.url or "").path
    name = posixpath.basename(path.rstrip("/"))
    return name[: limits.MAX_FILENAME_CHARS] or None


async def _prefix_items(request: web.Request, tenant: str, raw: object) -> list[BatchFile]:
    ctx = request.app[CTX]
    settings = ctx.settings
    try:
        spec = PrefixSource.model_validate(raw)
    except ValidationError as exc:
        raise PermanentError(f"invalid prefix: {brief(exc)}", ErrorCode.INVALID_REQUEST) from exc
    bucket = spec.bucket or settings.s3_bucket
    # The prefix as a key: a bucket the tenant may not read, `..`, or the service's own keys.
    limits.check_source(settings, tenant, spec.bucket, spec.prefix or "-")
    try:
        found = await ctx.storage.list_in(bucket, spec.prefix, PREFIX_SCAN_LIMIT + 1)
    except ObjectNotFound as exc:
        raise PermanentError(
            "the prefix's bucket does not exist", ErrorCode.SOURCE_UNREACHABLE
        ) from exc
    if len(found) > PREFIX_SCAN_LIMIT:
        raise PermanentError(
            f"more than {PREFIX_SCAN_LIMIT} objects under the prefix: name a narrower one",
            ErrorCode.BATCH_TOO_LARGE,
        )
    files: list[BatchFile] = []
    total = 0
    for obj in found:
        if not obj.key.lower().endswith(".pdf"):
            continue
        try:
            # Never the service's own keys, should the prefix reach them (its own bucket).
            limits.check_source(settings, tenant, spec.bucket, obj.key)
        except PermanentError:
            continue
        total += obj.size
        files.append(
            BatchFile(
                posixpath.basename(obj.key)[: limits.MAX_FILENAME_CHARS] or None,
                obj.key if len(obj.key) <= limits.MAX_CLIENT_REF_CHARS else None,
                None,
                source=Source(s3=S3Source(bucket=spec.bucket, key=obj.key)),
            )
        )
    if len(files) > settings.max_batch_items:
        raise _too_many(settings)
    if total > settings.max_batch_bytes:
        raise PermanentError(
            f"the PDFs under the prefix hold more than {settings.max_batch_bytes} bytes together "
            "(PDFRELAY_MAX_BATCH_BYTES)",
            ErrorCode.BATCH_TOO_LARGE,
        )
    if not files:
        raise PermanentError("there is no PDF under the prefix", ErrorCode.BATCH_REFUSED)
    return files

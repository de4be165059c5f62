"""Reading request bodies: multipart forms (the file spooled, fields bounded) and JSON, each
read cut off when the client stops sending."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from handlers.http.common import CTX
from shared.errors import (
    EmptyFile,
    ErrorCode,
    FileTooLarge,
    NotAPdf,
    PdfRelayError,
    PermanentError,
)
from shared.intake.uploads import Spooled, spool
from shared.runtime.context import Context
from shared.settings import Settings

CHUNK = 64 * 1024
T = TypeVar("T")


async def idle(settings: Settings, step: Awaitable[T]) -> T:
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
    while len(data) <= limit and (chunk := await idle(settings, part.read_chunk(CHUNK))):
        data += chunk
    if len(data) > limit:
        raise PermanentError(
            f"form field {str(part.name)[:64]!r} is longer than {limit} bytes",
            ErrorCode.REQUEST_TOO_LARGE,
        )
    return data.decode("utf-8", errors="replace")


async def _part_chunks(part: BodyPartReader, settings: Settings) -> AsyncIterator[bytes]:
    while chunk := await idle(settings, part.read_chunk(CHUNK)):
        yield chunk


async def _next_part(
    reader: MultipartReader, settings: Settings
) -> BodyPartReader | MultipartReader | None:
    """The next part of a form; a malformed one is the client's error (400), not ours (500)."""
    try:
        return await idle(settings, reader.next())
    except (HttpProcessingError, ValueError) as exc:
        raise PermanentError(
            "malformed multipart body: a part's headers or boundary are invalid",
            ErrorCode.INVALID_REQUEST,
        ) from exc


async def read_multipart(
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


async def json_body(request: web.Request) -> bytes:
    """The JSON body, at most `max_json_bytes` (413 REQUEST_TOO_LARGE), read with idle limits."""
    settings = request.app[CTX].settings
    limit = settings.max_json_bytes
    too_large = PermanentError(
        f"the JSON body is larger than {limit} bytes", ErrorCode.REQUEST_TOO_LARGE
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    while chunk := await idle(settings, request.content.read(CHUNK)):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


@dataclass
class BatchForm:
    """A `POST /v1/batches` form: each file spooled (or refused on its own), the other fields."""

    files: list[tuple[str | None, Spooled | PdfRelayError]] = field(default_factory=list)
    """(file name, the spooled file or why it was refused), in the order sent."""
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        for _, spooled in self.files:
            if isinstance(spooled, Spooled):
                os.unlink(spooled.path)


async def read_batch_form(request: web.Request, ctx: Context) -> BatchForm:
    """Spool every `file` part as a single upload is spooled, each checked on its own (a refused
    file is drained and noted, the others go on); `max_batch_items` files and
    `max_batch_bytes` bytes in all, else the whole request is refused (413 BATCH_TOO_LARGE)."""
    settings = ctx.settings
    try:
        reader = await request.multipart()
    except ValueError as exc:  # no boundary
        raise PermanentError(f"malformed multipart body: {exc}", ErrorCode.INVALID_REQUEST) from exc
    form = BatchForm()
    total = 0
    fields = 0

    async def counted(part: BodyPartReader) -> AsyncIterator[bytes]:
        nonlocal total
        async for chunk in _part_chunks(part, settings):
            total += len(chunk)
            if total > settings.max_batch_bytes:
                raise PermanentError(
                    f"the batch's files are larger than {settings.max_batch_bytes} bytes together",
                    ErrorCode.BATCH_TOO_LARGE,
                )
            yield chunk

    try:
        while (part := await _next_part(reader, settings)) is not None:
            if not isinstance(part, BodyPartReader):
                raise PermanentError("nested multipart is not supported", ErrorCode.INVALID_REQUEST)
            if part.name != "file":
                fields += 1
                if fields > settings.max_form_fields:
                    raise PermanentError(
                        f"the form has more than {settings.max_form_fields} fields",
                        ErrorCode.REQUEST_TOO_LARGE,
                    )
                text = await _part_text(part, settings)
                if part.name:
                    form.fields[part.name] = text
                continue
            if len(form.files) >= settings.max_batch_items:
                raise PermanentError(
                    f"a batch holds at most {settings.max_batch_items} files",
                    ErrorCode.BATCH_TOO_LARGE,
                )
            chunks = counted(part)
            try:
                spooled: Spooled | PdfRelayError = await spool(
                    chunks, settings.max_file_bytes, settings.spool_dir, digest=False
                )
            except (NotAPdf, EmptyFile, FileTooLarge) as exc:
                spooled = exc
                async for _ in chunks:  # the rest of the refused file, still counted
                    pass
            form.files.append((part.filename, spooled))
    except BaseException:
        form.discard()
        raise
    return form

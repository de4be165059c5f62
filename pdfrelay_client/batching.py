"""Batches for `AsyncClient`: many files in one request, their items, their results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from pdfrelay_client.models import Batch, BatchItem, BatchResult
from pdfrelay_client.transport import file_chunks

if TYPE_CHECKING:
    from pdfrelay_client.aio import AsyncClient

BatchFile = str | os.PathLike[str] | bytes
PDF = "application/pdf"


def batch_id_of(batch: Batch | str) -> str:
    return batch.batch_id if isinstance(batch, Batch) else batch


async def submit_batch(
    client: AsyncClient,
    files: Sequence[BatchFile],
    options: dict[str, Any] | None,
    webhook: str | None,
    client_refs: Sequence[str | None] | None,
    target: dict[str, Any] | None = None,
) -> Batch:
    paths: list[str | None] = []
    for f in files:
        if isinstance(f, bytes):
            paths.append(None)
            continue
        path = os.fspath(f)
        if not await asyncio.to_thread(os.path.isfile, path):
            raise FileNotFoundError(2, "no such file", path)
        paths.append(path)
    if client_refs is not None and len(client_refs) != len(files):
        raise ValueError("give one client_ref per file (None for none)")

    def body() -> dict[str, Any]:
        form = aiohttp.FormData(default_to_multipart=True)
        for i, (f, path) in enumerate(zip(files, paths, strict=True)):
            if path is None:
                assert isinstance(f, bytes)
                form.add_field(
                    "file", f, filename=f"document-{i}.pdf", content_type="application/pdf"
                )
            else:
                name = os.path.basename(path)
                form.add_field(
                    "file", file_chunks(path), filename=name, content_type="application/pdf"
                )
        if options is not None:
            form.add_field("options", json.dumps(options))
        if webhook is not None:
            form.add_field("webhook_url", webhook)
        if client_refs is not None:
            form.add_field("client_refs", json.dumps(list(client_refs)))
        if target is not None:
            form.add_field("target", json.dumps(target))
        return {"data": form}

    view = await client.transport.json("POST", "/v1/batches", (202,), body=body)
    return Batch.from_view(view)


async def items(
    client: AsyncClient, batch: Batch | str, page_size: int
) -> AsyncGenerator[BatchItem, None]:
    cursor: str | None = None
    while True:
        page = await client.get_batch(batch, limit=page_size, cursor=cursor)
        for item in page.items:
            yield item
        if not page.next_cursor:
            return
        cursor = page.next_cursor


async def results(
    client: AsyncClient, batch: Batch | str, max_concurrency: int
) -> AsyncIterator[BatchResult]:
    """Each item's outcome as it ends (refused items first), `max_concurrency` followed at once."""
    done: asyncio.Queue[BatchResult | BaseException] = asyncio.Queue()
    slots = asyncio.Semaphore(max(1, max_concurrency))

    async def follow(item: BatchItem) -> None:
        assert item.job_id is not None
        try:
            async with slots:
                job = await client.wait(item.job_id)
                result = await client.result(job) if job.status == "completed" else None
            await done.put(BatchResult(item, job, result))
        except BaseException as exc:  # handed to the consumer, raised there
            await done.put(exc)
            raise

    tasks: list[asyncio.Task[None]] = []
    try:
        async with contextlib.aclosing(items(client, batch, 1000)) as every:
            async for item in every:
                if item.job_id is None:
                    yield BatchResult(item)
                else:
                    tasks.append(asyncio.create_task(follow(item)))
        for _ in tasks:
            got = await done.get()
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

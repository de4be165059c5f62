"""`Client`: the same API for plain (synchronous) code, over `AsyncClient` on a private loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pdfrelay_client.aio import DEFAULT_URL, AsyncClient, JobRef, Source
from pdfrelay_client.batching import BatchFile
from pdfrelay_client.errors import ApiError
from pdfrelay_client.models import Batch, BatchItem, BatchResult, Job, JobPage, Webhook

T = TypeVar("T")


class Client:
    """The service's HTTP API for synchronous code: ``with Client(…) as client:``.

    Each call runs the `AsyncClient` call of the same name on the client's own event loop
    (an `asyncio.Runner`), so the HTTP session and its connections are kept between calls.
    Not for use inside a running event loop (use `AsyncClient` there), nor from several
    threads at once. Arguments as for `AsyncClient`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        max_retry_wait: float = 60.0,
    ) -> None:
        self._runner = asyncio.Runner()
        self.aio = AsyncClient(
            base_url,
            api_key=api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and the loop."""
        try:
            self._runner.run(self.aio.close())
        finally:
            self._runner.close()

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await anext(agen)

        try:
            while True:
                try:
                    yield self._runner.run(step())
                except StopAsyncIteration:
                    return
        finally:
            if isinstance(agen, AsyncGenerator):
                self._runner.run(agen.aclose())

    def on_retry(self, callback: Callable[[ApiError, float], None] | None) -> None:
        """See `AsyncClient.on_retry`."""
        self.aio.on_retry(callback)

    def submit(
        self,
        source: Source,
        options: Mapping[str, Any] | None = None,
        *,
        webhook: Webhook | str | None = None,
        client_ref: str | None = None,
        filename: str | None = None,
        idempotency_key: str | None = None,
        target: Mapping[str, Any] | None = None,
    ) -> Job:
        """See `AsyncClient.submit`."""
        return self._runner.run(
            self.aio.submit(
                source,
                options,
                webhook=webhook,
                client_ref=client_ref,
                filename=filename,
                idempotency_key=idempotency_key,
                target=target,
            )
        )

    def get(self, job: JobRef, *, wait: float | None = None) -> Job:
        """See `AsyncClient.get`."""
        return self._runner.run(self.aio.get(job, wait=wait))

    def events(self, job: JobRef) -> Iterator[Job]:
        """See `AsyncClient.events`."""
        return self._iterate(self.aio.events(job))

    def wait(
        self,
        job: JobRef,
        timeout: float | None = None,
        *,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """See `AsyncClient.wait`."""
        return self._runner.run(self.aio.wait(job, timeout, on_update=on_update))

    def result(self, job: JobRef) -> dict[str, Any]:
        """See `AsyncClient.result`."""
        return self._runner.run(self.aio.result(job))

    def artifact(self, job: JobRef, name: str) -> bytes:
        """See `AsyncClient.artifact`."""
        return self._runner.run(self.aio.artifact(job, name))

    def save_artifact(self, job: JobRef, name: str, dest: str | os.PathLike[str]) -> Path:
        """See `AsyncClient.save_artifact`."""
        return self._runner.run(self.aio.save_artifact(job, name, dest))

    def cancel(self, job: JobRef) -> Job:
        """See `AsyncClient.cancel`."""
        return self._runner.run(self.aio.cancel(job))

    def list_jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        door: str | None = None,
        client_ref: str | None = None,
        created_after: datetime | str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobPage:
        """See `AsyncClient.list_jobs`."""
        return self._runner.run(
            self.aio.list_jobs(
                status=status,
                door=door,
                client_ref=client_ref,
                created_after=created_after,
                limit=limit,
                cursor=cursor,
            )
        )

    def jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        door: str | None = None,
        client_ref: str | None = None,
        created_after: datetime | str | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """See `AsyncClient.jobs`."""
        return self._iterate(
            self.aio.jobs(
                status=status,
                door=door,
                client_ref=client_ref,
                created_after=created_after,
                page_size=page_size,
            )
        )

    # --- batches -------------------------------------------------------------------------------

    def submit_batch(
        self,
        files: Sequence[BatchFile],
        options: Mapping[str, Any] | None = None,
        *,
        webhook: str | None = None,
        client_refs: Sequence[str | None] | None = None,
        target: Mapping[str, Any] | None = None,
    ) -> Batch:
        """See `AsyncClient.submit_batch`."""
        return self._runner.run(
            self.aio.submit_batch(
                files, options, webhook=webhook, client_refs=client_refs, target=target
            )
        )

    def get_batch(
        self, batch: Batch | str, *, limit: int = 100, cursor: str | None = None
    ) -> Batch:
        """See `AsyncClient.get_batch`."""
        return self._runner.run(self.aio.get_batch(batch, limit=limit, cursor=cursor))

    def batch_items(self, batch: Batch | str, *, page_size: int = 1000) -> Iterator[BatchItem]:
        """See `AsyncClient.batch_items`."""
        return self._iterate(self.aio.batch_items(batch, page_size=page_size))

    def cancel_batch(self, batch: Batch | str) -> Batch:
        """See `AsyncClient.cancel_batch`."""
        return self._runner.run(self.aio.cancel_batch(batch))

    def iter_results(
        self, batch: Batch | str, *, max_concurrency: int = 4
    ) -> Iterator[BatchResult]:
        """See `AsyncClient.iter_results`."""
        return self._iterate(self.aio.iter_results(batch, max_concurrency=max_concurrency))

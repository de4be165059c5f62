"""`AsyncClient`: the service's HTTP API for asyncio code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from pdfrelay_client import batching
from pdfrelay_client.batching import BatchFile
from pdfrelay_client.errors import (
    ApiError,
    ConnectionFailed,
    InvalidInput,
    JobFailed,
    ServerError,
    WaitTimeout,
)
from pdfrelay_client.models import Batch, BatchItem, BatchResult, Job, JobPage, S3Object, Webhook
from pdfrelay_client.sse import sse_events
from pdfrelay_client.transport import CHUNK, Transport, file_chunks

DEFAULT_URL = "http://127.0.0.1:8080"
STREAM_REOPENS = 5
"""Event streams that end early (a restart) are reopened this often, then the job is polled."""
POLL_WAIT_S = 30
"""Long-poll of the polling fallback (the service caps it at `PDFRELAY_MAX_WAIT_S`)."""

Source = str | os.PathLike[str] | bytes | S3Object
JobRef = Job | str


def job_id_of(job: JobRef) -> str:
    return job.job_id if isinstance(job, Job) else job


def _form_fields(
    options: Mapping[str, Any] | None,
    webhook: Webhook | str | None,
    client_ref: str | None,
    target: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    fields: dict[str, str] = {}
    if target is not None:
        fields["target"] = json.dumps(dict(target))
    if options is not None:
        fields["options"] = json.dumps(dict(options))
    hook = Webhook(webhook) if isinstance(webhook, str) else webhook
    if hook is not None:
        fields["webhook_url"] = hook.url
        if hook.token:
            fields["webhook_token"] = hook.token
        if hook.progress:
            fields["webhook_progress"] = "true"
    if client_ref is not None:
        fields["client_ref"] = client_ref
    return fields


class AsyncClient:
    """The service's HTTP API for asyncio code; use it as `async with AsyncClient(…) as c:`.

    Args:
        base_url: The service, e.g. ``http://127.0.0.1:8080``.
        api_key: Sent as ``Authorization: Bearer`` (when the service has ``PDFRELAY_API_KEYS``).
        timeout: Longest silence (seconds) on a connection before it counts as failed.
        connect_timeout: Time to open a connection.
        max_retries: 429/503 answers are tried again this often, waiting as ``Retry-After``
            says, before `Busy` is raised.
        max_retry_wait: Cap of one such wait (seconds).
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
        self._t = Transport(
            base_url,
            api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
        )

    @property
    def base_url(self) -> str:
        return self._t.base_url

    @property
    def transport(self) -> Transport:
        """The HTTP session and retry policy (for this package's other modules)."""
        return self._t

    def on_retry(self, callback: Callable[[ApiError, float], None] | None) -> None:
        """Call `callback(refusal, seconds)` before each wait for a 429/503 retry."""
        self._t.on_retry = callback

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._t.close()

    # --- jobs ----------------------------------------------------------------------------------

    async def submit(
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
        """Submit a PDF: a local path, its bytes, an ``http(s)://`` URL or an `S3Object`.

        ``target``: where the outputs are written once the job ends, ``{"name": …}`` (a
        destination the operator configured) or ``{"urls": {"manifest.json": …, …}}`` (presigned
        PUT URLs); ``job.target`` says how that went.

        Returns:
            The job as accepted (``queued``).

        Raises:
            InvalidInput: The service refused it (``NOT_A_PDF``, ``FILE_TOO_LARGE``, …).
            Busy: Still 429/503 after the bounded retries.
            FileNotFoundError: ``source`` names no local file.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if isinstance(source, S3Object) or (
            isinstance(source, str) and source.startswith(("http://", "https://"))
        ):
            return await self._submit_json(source, options, webhook, client_ref, headers, target)
        fields = _form_fields(options, webhook, client_ref, target)
        if isinstance(source, bytes):
            data, name = source, filename or "document.pdf"

            def body() -> dict[str, Any]:
                return {"data": _form(data, name, fields)}
        else:
            path = os.fspath(source)
            if not await asyncio.to_thread(os.path.isfile, path):
                raise FileNotFoundError(2, "no such file", path)
            name = filename or os.path.basename(path)

            def body() -> dict[str, Any]:
                return {"data": _form(file_chunks(path), name, fields)}

        view = await self._t.json("POST", "/v1/jobs", (202,), body=body, headers=headers)
        return Job.from_view(view)

    async def _submit_json(
        self,
        source: str | S3Object,
        options: Mapping[str, Any] | None,
        webhook: Webhook | str | None,
        client_ref: str | None,
        headers: dict[str, str],
        target: Mapping[str, Any] | None = None,
    ) -> Job:
        payload: dict[str, Any] = {
            "source": {"url": source}
            if isinstance(source, str)
            else {"s3": {"bucket": source.bucket, "key": source.key}}
        }
        if options is not None:
            payload["options"] = dict(options)
        hook = Webhook(webhook) if isinstance(webhook, str) else webhook
        if hook is not None:
            payload["webhook"] = {"url": hook.url, "token": hook.token, "progress": hook.progress}
        if client_ref is not None:
            payload["client_ref"] = client_ref
        if target is not None:
            payload["target"] = dict(target)
        view = await self._t.json("POST", "/v1/jobs", (202,), json=payload, headers=headers)
        return Job.from_view(view)

    async def get(self, job: JobRef, *, wait: float | None = None) -> Job:
        """The job now, or (``wait``) once it ended or ``wait`` seconds passed (capped)."""
        params = {"wait": f"{wait:g}"} if wait else None
        return Job.from_view(await self._t.json("GET", f"/v1/jobs/{job_id_of(job)}", params=params))

    async def events(self, job: JobRef) -> AsyncIterator[Job]:
        """The job at each change until it ends: its event stream, or polling without one."""
        job_id = job_id_of(job)
        for _ in range(STREAM_REOPENS):
            try:
                # Closed here, not by the garbage collector, when the end comes or the caller
                # stops: its connection goes back at once.
                async with contextlib.aclosing(self._stream(job_id)) as stream:
                    async for final, update in stream:
                        yield update
                        if final:
                            return
            except ConnectionFailed:
                continue  # the stream broke off (a restart): open it again
            except (ServerError, InvalidInput):
                break  # no usable stream here (a proxy, an old service): poll
        last: Job | None = None
        while True:
            current = await self.get(job_id, wait=POLL_WAIT_S)
            if last is None or (current.status, current.pages_done) != (
                last.status,
                last.pages_done,
            ):
                yield current
            if current.ended:
                return
            last = current

    async def _stream(self, job_id: str) -> AsyncGenerator[tuple[bool, Job], None]:
        """(whether it is the terminal event, the job) of each event of one event stream."""
        accept = {"Accept": "text/event-stream"}
        async with self._t.request("GET", f"/v1/jobs/{job_id}/events", headers=accept) as resp:
            if resp.content_type != "text/event-stream":
                raise ServerError(resp.status, "", "the events answer is not an event stream")
            async for kind, data in sse_events(resp.content):
                view = json.loads(data)
                if isinstance(view, dict):
                    update = Job.from_view(view)
                    # A progress event is never the end, even one sent just as the job ended.
                    yield kind != "job.progress" and update.ended, update

    async def wait(
        self,
        job: JobRef,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's public meaning, not I/O's
        *,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Wait until the job ends (``completed``, ``failed`` or ``cancelled``) and return it.

        Raises:
            WaitTimeout: ``timeout`` seconds passed first (the job goes on).
        """
        last: Job | None = None
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                async for update in self.events(job):
                    last = update
                    if on_update is not None:
                        on_update(update)
        except TimeoutError as exc:
            if deadline.expired():
                raise WaitTimeout(f"job {job_id_of(job)} did not end within {timeout:g} s") from exc
            raise
        assert last is not None
        return last

    async def result(self, job: JobRef) -> dict[str, Any]:
        """The extraction result (``pages``, ``markdown``, ``metadata``, …) of a completed job.

        Raises:
            JobFailed: The job (as given) ended ``failed`` or ``cancelled``.
            NotFound: No such job, or it has not completed.
        """
        if isinstance(job, Job) and job.ended and job.status != "completed":
            raise JobFailed(job)
        data: dict[str, Any] = await self._t.json("GET", f"/v1/jobs/{job_id_of(job)}/result")
        return data

    async def artifact(self, job: JobRef, name: str) -> bytes:
        """One artifact's bytes (``document.md``, a page-image zip, …)."""
        path = f"/v1/jobs/{job_id_of(job)}/artifacts/{name}"
        async with self._t.request("GET", path) as resp:
            return await resp.read()

    async def save_artifact(self, job: JobRef, name: str, dest: str | os.PathLike[str]) -> Path:
        """Stream one artifact into the file ``dest``; returns its path."""
        target = Path(dest)
        path = f"/v1/jobs/{job_id_of(job)}/artifacts/{name}"
        async with self._t.request("GET", path) as resp:
            fh = await asyncio.to_thread(open, target, "wb")
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                fh.close()
        return target

    async def cancel(self, job: JobRef) -> Job:
        """Cancel a queued or running job; the job as the service then shows it.

        Raises:
            Conflict: The job already completed or failed.
        """
        path = f"/v1/jobs/{job_id_of(job)}"
        return Job.from_view(await self._t.json("DELETE", path, (200, 202)))

    async def list_jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        door: str | None = None,
        client_ref: str | None = None,
        created_after: datetime | str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the tenant's jobs, newest first (`jobs` walks every page)."""
        params = {"limit": str(limit)}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if door:
            params["door"] = door
        if client_ref:
            params["client_ref"] = client_ref
        if created_after is not None:
            params["created_after"] = (
                created_after.isoformat() if isinstance(created_after, datetime) else created_after
            )
        if cursor:
            params["cursor"] = cursor
        page = await self._t.json("GET", "/v1/jobs", params=params)
        return JobPage(
            jobs=[Job.from_view(v) for v in page.get("jobs") or ()],
            next_cursor=page.get("next_cursor"),
        )

    async def jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        door: str | None = None,
        client_ref: str | None = None,
        created_after: datetime | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Job]:
        """Every job of the tenant that matches, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                status=status,
                door=door,
                client_ref=client_ref,
                created_after=created_after,
                limit=page_size,
                cursor=cursor,
            )
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # --- batches -------------------------------------------------------------------------------

    async def submit_batch(
        self,
        files: Sequence[BatchFile],
        options: Mapping[str, Any] | None = None,
        *,
        webhook: str | None = None,
        client_refs: Sequence[str | None] | None = None,
        target: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Submit many PDFs (paths or bytes) in one request; the batch and every item.

        Files the service refuses (not a PDF, empty, too large) are items with status
        ``refused`` and an ``error``; the others are queued. ``webhook`` receives one
        ``batch.completed`` when the last item ends.

        Raises:
            InvalidInput: No file was accepted (``BATCH_REFUSED``: ``exc.body["items"]`` says
                why, each), or the batch is over the service's limits (``BATCH_TOO_LARGE``).
        """
        return await batching.submit_batch(
            self,
            files,
            dict(options) if options is not None else None,
            webhook,
            client_refs,
            dict(target) if target is not None else None,
        )

    async def get_batch(
        self, batch: Batch | str, *, limit: int = 100, cursor: str | None = None
    ) -> Batch:
        """The batch now: counts by status and one page of its items."""
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        path = f"/v1/batches/{batching.batch_id_of(batch)}"
        return Batch.from_view(await self._t.json("GET", path, params=params))

    def batch_items(self, batch: Batch | str, *, page_size: int = 1000) -> AsyncIterator[BatchItem]:
        """Every item of the batch, page after page."""
        return batching.items(self, batch, page_size)

    async def cancel_batch(self, batch: Batch | str) -> Batch:
        """Cancel every item of the batch that has not ended."""
        path = f"/v1/batches/{batching.batch_id_of(batch)}"
        return Batch.from_view(await self._t.json("DELETE", path))

    def iter_results(
        self, batch: Batch | str, *, max_concurrency: int = 4
    ) -> AsyncIterator[BatchResult]:
        """What became of each file, as each ends: refused items first, then each job as it
        ends (its result fetched when it completed), at most ``max_concurrency`` followed at
        once. Wrap it in ``asyncio.timeout`` to bound the wait."""
        return batching.results(self, batch, max_concurrency)


def _form(file: Any, name: str, fields: dict[str, str]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", file, filename=name, content_type="application/pdf")
    for key, value in fields.items():
        form.add_field(key, value)
    return form

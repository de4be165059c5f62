"""A running job's progress: `job.progress` events, throttled record writes and progress
webhooks, sent beside the extraction without ever holding it up (the extract handler)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from shared.errors import JobCancelled, TransientError
from shared.jobs import lifecycle
from shared.jobs.outcome import ProgressWebhooks, publish_event
from shared.jobs.records import Revision
from shared.models import Job, Progress
from shared.runtime.context import Context

log = logging.getLogger(__name__)

RECORD_INTERVAL_S = 2.0
"""Progress is written into the job record at most this often (an S3 PUT of the whole record);
the job.progress events go out at the workers' pace (every 0.25 s at most)."""


class ProgressReporter:
    """Publishes job.progress events without ever holding up the worker.

    Nothing goes out during a job's first `after_s` (PDFRELAY_PROGRESS_AFTER_S): a short job
    costs no `processing` record write and no progress event; a longer one has its record say
    `processing` (with its progress) from then on, and a `job.progress` event says so even
    before its worker has reported a page.
    """

    def __init__(
        self,
        ctx: Context,
        job: Job,
        rev: Revision,
        hooks: ProgressWebhooks | None = None,
        after_s: float = 0.0,
    ) -> None:
        self._ctx = ctx
        self.job = job
        self._rev = rev
        """Shared with the job's ending: each record write here moves it on."""
        self._hooks = hooks
        self._after_s = after_s
        self._live = after_s <= 0
        self._ended = False
        """The job has ended elsewhere (its record says so): nothing more is sent."""
        self._latest: tuple[int, int] | None = None
        self._record_due = False
        """The record is to say `processing` (no progress reported yet: no event)."""
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._saved_at = -RECORD_INTERVAL_S

    def start(self, job: Job) -> None:
        """The job has its worker slot (`job` says processing)."""
        self.job = job
        if self._live:
            self._record_due = True
            self._kick()
        else:
            self._timer = asyncio.create_task(self._go_live())

    async def _go_live(self) -> None:
        await asyncio.sleep(self._after_s)
        self._live = True
        self._record_due = self._latest is None
        self._kick()

    def update(self, done: int, total: int) -> None:
        self._latest = (done, total)
        if self._live:
            self._kick()

    def _kick(self) -> None:
        if self._ended:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while not self._ended and (self._latest is not None or self._record_due):
            try:
                await self._send_next()
            except TransientError as exc:
                # Progress is a courtesy: a lost update must not fail (and redo) the extraction.
                log.warning("job %s: a progress update was lost: %s", self.job.job_id, exc.message)
            except JobCancelled as exc:
                # Ended elsewhere: no more updates; the job's ending finds the stored one.
                log.info("job %s: no more progress: %s", self.job.job_id, exc.message)
                self._ended = True
                return

    async def _send_next(self) -> None:
        if self._latest is None:
            self._record_due = False
            await lifecycle.save_progress(self._ctx, self.job, self._rev)
            # Followers hear of `processing` too, not only readers of the record (a worker
            # may report no page for a long while).
            await publish_event(self._ctx, self.job, "job.progress")
            return
        self._record_due = False
        done, total = self._latest
        self._latest = None
        job = self.job.model_copy(update={"progress": Progress(pages_done=done, pages_total=total)})
        now = time.monotonic()
        if now - self._saved_at >= RECORD_INTERVAL_S:
            self._saved_at = now
            await lifecycle.save_progress(self._ctx, job, self._rev)
        await publish_event(self._ctx, job, "job.progress")
        if self._hooks is not None:
            await self._hooks.send(job)

    async def flush(self) -> None:
        """Stop the timer and wait for what is being sent (the job is about to end)."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._task is not None:
            await self._task

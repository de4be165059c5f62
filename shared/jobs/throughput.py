"""How fast extraction goes, measured from finished jobs, and the estimates made from it.

Deliberately simple, and said so in the answers' names: RabbitMQ does not tell where a message
is in a queue, so a queued job's position is the number of messages ready in the extract
queue (the jobs ahead of it are at most that many, fewer for older jobs); its ETA assumes the
jobs ahead are average-sized and the workers of every consuming extract process run them at the
measured speed. A running job's ETA comes from its own pages per second so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from shared.models import Job, JobStatus, utcnow
from shared.runtime.context import Context

ALPHA = 0.2
"""Weight of the newest job in the moving averages (about the last ten jobs count)."""
MIN_SECONDS = 0.001
QUEUE_PROBE_TTL_S = 2.0
"""How old the extract queue's depth behind a queued job's ETA may be."""


class ThroughputMeter:
    """Exponential moving averages of a worker's pages per second and of pages per job,
    fed with every `job.completed` event this process sees."""

    def __init__(self) -> None:
        self.pages_per_s: float | None = None
        self.pages_per_job: float | None = None
        self.samples = 0

    def observe(self, pages: int, seconds: float) -> None:
        if pages <= 0:
            return
        rate = pages / max(seconds, MIN_SECONDS)
        self.pages_per_s = _ewma(self.pages_per_s, rate)
        self.pages_per_job = _ewma(self.pages_per_job, float(pages))
        self.samples += 1

    def on_event(self, routing_key: str, body: bytes) -> None:
        """A JobWatcher observer: learn from the job views of `job.completed` events."""
        if routing_key != "job.completed":
            return
        try:
            view = json.loads(body)
            pages = int(view["result"]["pages_extracted"])
            started = datetime.fromisoformat(view["started_at"])
            finished = datetime.fromisoformat(view["finished_at"])
        except (ValueError, KeyError, TypeError):
            return  # a job without timings (e.g. answered from a cache) teaches nothing
        self.observe(pages, (finished - started).total_seconds())


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


@dataclass(frozen=True)
class QueueState:
    ready: int
    """Messages ready in the extract queue."""
    consumers: int
    """Extract processes consuming it."""


@dataclass(frozen=True)
class Estimate:
    queue_position: int | None
    """Queued jobs: at most this many jobs are ahead of it, itself included (1 = next)."""
    eta_s: float | None
    """Seconds until the job is expected to end; None when there is nothing to go by."""


def estimate(
    job: Job,
    meter: ThroughputMeter,
    queue: QueueState | None,
    workers_per_process: int,
    now: datetime,
) -> Estimate:
    """The queue position and ETA of a job that has not ended."""
    rate = meter.pages_per_s
    if job.status is JobStatus.PROCESSING:
        done, total = job.progress.pages_done, job.progress.pages_total
        if total is not None and done > 0 and job.started_at is not None:
            own = done / max((now - job.started_at).total_seconds(), MIN_SECONDS)
            return Estimate(None, _seconds((total - done) / own))
        if rate is None:
            return Estimate(None, None)
        remaining = (total if total is not None else meter.pages_per_job or 1.0) - done
        return Estimate(None, _seconds(remaining / rate))
    if job.status is not JobStatus.QUEUED or queue is None:
        return Estimate(None, None)
    position = max(1, queue.ready)
    if rate is None or meter.pages_per_job is None or queue.consumers == 0:
        return Estimate(position, None)
    parallel = queue.consumers * max(1, workers_per_process)
    own_pages = float(job.pages_reserved or meter.pages_per_job)
    ahead = (position - 1) * meter.pages_per_job / (rate * parallel)
    return Estimate(position, _seconds(ahead + own_pages / rate))


async def estimate_now(ctx: Context, job: Job, meter: ThroughputMeter) -> Estimate:
    """The job's queue position and ETA now (none when it has ended); a queued job's from the
    extract queue's depth, read at most `QUEUE_PROBE_TTL_S` ago."""
    if job.status.terminal:
        return Estimate(None, None)
    queue = None
    if job.status is JobStatus.QUEUED:
        depth = await ctx.metrics.queue_depth(ctx.topology.extract, QUEUE_PROBE_TTL_S)
        queue = QueueState(ready=depth[0], consumers=depth[1]) if depth is not None else None
    return estimate(job, meter, queue, ctx.settings.extract_workers, utcnow())


def _seconds(eta: float) -> float:
    """To a tenth of a second, and never 0: a job that has not ended is not done yet."""
    return max(round(eta, 1), 0.1)


def batch_eta(
    created_at: datetime,
    now: datetime,
    ended: int,
    pending: int,
    meter: ThroughputMeter,
    parallel: int,
) -> float | None:
    """Seconds until a batch's last item is expected to end (None when it has no pending item,
    or nothing to go by): at the batch's own pace once an item has ended (items ended per
    second since it was created), else from the measured speed, average-sized items, and
    `parallel` workers on it."""
    if pending <= 0:
        return None
    elapsed = (now - created_at).total_seconds()
    if ended > 0 and elapsed > 0:
        return _seconds(pending * elapsed / ended)
    rate, pages = meter.pages_per_s, meter.pages_per_job
    if rate is None or pages is None or parallel <= 0:
        return None
    return _seconds(pending * pages / (rate * parallel))

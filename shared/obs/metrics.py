"""Prometheus metrics: one `Metrics` per process (on the Context), over a registry of its own.

Nothing is registered at import time, so several contexts in one process (tests, benchmarks)
never share or collide on a metric. Counters are incremented where things happen; the queue
depths and the worker pool's counts are read when `/metrics` is scraped (the queue depths by a
passive `queue.declare` per queue, cached for `QUEUE_DEPTH_TTL_S`).

| metric | type | labels |
|---|---|---|
| `pdfrelay_jobs_total` | counter | `state` (accepted, completed, failed, cancelled), `door` |
| `pdfrelay_job_failures_total` | counter | `code` (the job's error code) |
| `pdfrelay_extraction_seconds` | histogram | |
| `pdfrelay_job_pages` | histogram | |
| `pdfrelay_queue_messages` | gauge | `queue` (ready messages) |
| `pdfrelay_queue_consumers` | gauge | `queue` |
| `pdfrelay_messages_total` | counter | `queue`, `outcome` (ack, dead, retry, requeue) |
| `pdfrelay_webhook_attempts_total` | counter | `event`, `outcome` (delivered, retry, gone, …) |
| `pdfrelay_webhook_attempt_seconds` | histogram | |
| `pdfrelay_dead_letters_total` | counter | `queue` (the queue the message was given up from) |
| `pdfrelay_cache_hits_total` | counter | |
| `pdfrelay_llm_calls_total` | counter | `outcome` (ok, cached, failed, refused) |
| `pdfrelay_llm_tokens_total` | counter | `direction` (in, out) |
| `pdfrelay_worker_processes_started_total` | counter | |
| `pdfrelay_worker_restarts_total` | counter | (worker processes that died without an answer) |
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class PoolCounts(Protocol):
    """What the metrics read of a worker pool (shared.extraction.pool.PoolCounts)."""

    @property
    def started(self) -> int: ...

    @property
    def crashed(self) -> int: ...


log = logging.getLogger(__name__)

PREFIX = "pdfrelay"
QUEUE_DEPTH_TTL_S = 5.0
"""A scrape at most this often costs one passive declare per queue; others read the cache."""
QUEUE_DECLARE_TIMEOUT_S = 2.0

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
PAGES_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The process's metrics; `render` produces the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            f"{PREFIX}_jobs",
            "Jobs accepted and jobs ended, by state and by the door they came in by.",
            ["state", "door"],
            registry=r,
        )
        self.job_failures = Counter(
            f"{PREFIX}_job_failures", "Failed jobs by error code.", ["code"], registry=r
        )
        self.extraction_seconds = Histogram(
            f"{PREFIX}_extraction_seconds",
            "Time a worker process spent extracting one job.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.job_pages = Histogram(
            f"{PREFIX}_job_pages",
            "Pages extracted per completed job.",
            buckets=PAGES_BUCKETS,
            registry=r,
        )
        self.messages = Counter(
            f"{PREFIX}_messages",
            "Broker messages handled, by queue and how they were settled.",
            ["queue", "outcome"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            f"{PREFIX}_webhook_attempts",
            "Webhook delivery attempts by event type and outcome.",
            ["event", "outcome"],
            registry=r,
        )
        self.webhook_attempt_seconds = Histogram(
            f"{PREFIX}_webhook_attempt_seconds",
            "Duration of one webhook delivery attempt.",
            buckets=WEBHOOK_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters",
            "Messages given up on and parked in a dead-letter queue, by the queue they left.",
            ["queue"],
            registry=r,
        )
        self.cache_hits = Counter(
            f"{PREFIX}_cache_hits", "Jobs answered from the result cache.", registry=r
        )
        self.llm_calls = Counter(
            f"{PREFIX}_llm_calls",
            "Pages for the vision model by outcome: ok (a call), cached (none), failed, refused.",
            ["outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            f"{PREFIX}_llm_tokens",
            "Tokens the vision model reported, by direction (in: prompt, out: completion).",
            ["direction"],
            registry=r,
        )
        self._queues = _QueueDepths()
        self._pool = _PoolCollector()
        r.register(self._queues)
        r.register(self._pool)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def job_state(self, state: str, door: str) -> None:
        """Count a job accepted (`state="accepted"`) or ended (its terminal status)."""
        self.jobs.labels(state=state, door=door).inc()

    def job_ended(self, status: str, door: str, error_code: str | None = None) -> None:
        """Count a job that reached a terminal status (once: not on re-announcements)."""
        self.jobs.labels(state=status, door=door).inc()
        if error_code is not None:
            self.job_failures.labels(code=error_code).inc()

    def watch_pool(self, pool: PoolCounts) -> None:
        """Report this worker pool's process starts and crashes."""
        self._pool.pool = pool

    def watch_queues(
        self, connection: AbstractRobustConnection, queue_names: Sequence[str]
    ) -> None:
        """Report the depth of these queues (read on scrape, passively)."""
        self._queues.connection = connection
        self._queues.names = tuple(queue_names)

    async def queue_depth(self, name: str, max_age_s: float) -> tuple[int, int] | None:
        """(ready messages, consumers) of a watched queue, read at most `max_age_s` ago; None
        when it could not be read."""
        await self._queues.refresh([name], max_age_s)
        return self._queues.values.get(name)

    async def queue_depths(
        self, names: Sequence[str], max_age_s: float
    ) -> dict[str, tuple[int, int] | None]:
        """`queue_depth` of each of `names`, read together (one channel, one pass)."""
        await self._queues.refresh(names, max_age_s)
        return {name: self._queues.values.get(name) for name in names}

    async def render(self) -> bytes:
        """The exposition text, with queue depths at most `QUEUE_DEPTH_TTL_S` old."""
        await self._queues.refresh(self._queues.names, QUEUE_DEPTH_TTL_S)
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    def __init__(self) -> None:
        self.pool: PoolCounts | None = None

    def collect(self) -> Iterable[Metric]:
        if self.pool is None:
            return []
        started = CounterMetricFamily(
            f"{PREFIX}_worker_processes_started",
            "Extraction worker processes started (one per document).",
            value=self.pool.started,
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_worker_restarts",
            "Extraction worker processes that died without an answer and were replaced.",
            value=self.pool.crashed,
        )
        return [started, restarts]


class _QueueDepths(Collector):
    """Queue depths from passive declares on a channel of their own, cached briefly."""

    def __init__(self) -> None:
        self.connection: AbstractRobustConnection | None = None
        self.names: tuple[str, ...] = ()
        self.values: dict[str, tuple[int, int]] = {}
        """(ready, consumers) per queue; a queue whose last read failed has none."""
        self._read_at: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def refresh(self, names: Sequence[str], max_age_s: float) -> None:
        """Read again those of `names` whose sample is older than `max_age_s`."""
        if self.connection is None:
            return
        async with self._lock:
            now = time.monotonic()
            stale = [n for n in names if now - self._read_at.get(n, float("-inf")) >= max_age_s]
            if not stale:
                return
            read = await self._read(self.connection, stale)
            for name in stale:
                self._read_at[name] = now
                if name in read:
                    self.values[name] = read[name]
                else:
                    self.values.pop(name, None)

    async def _read(
        self, connection: AbstractRobustConnection, names: Sequence[str]
    ) -> dict[str, tuple[int, int]]:
        values: dict[str, tuple[int, int]] = {}
        channel: AbstractChannel | None = None
        try:
            for name in names:
                if channel is None or channel.is_closed:
                    channel = await connection.channel()
                try:
                    underlay = await channel.get_underlay_channel()
                    ok = await asyncio.wait_for(
                        underlay.queue_declare(name, passive=True), QUEUE_DECLARE_TIMEOUT_S
                    )
                except (AMQPError, TimeoutError):
                    # Not declared (yet), or the broker is away: no sample for this queue.
                    # A failed passive declare closes the channel: open another one.
                    await _close(channel)
                    channel = None
                    continue
                values[name] = (ok.message_count or 0, ok.consumer_count or 0)
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning("queue depths not read: %s", exc)
        finally:
            if channel is not None:
                await _close(channel)
        return values

    def collect(self) -> Iterable[Metric]:
        messages = GaugeMetricFamily(
            f"{PREFIX}_queue_messages",
            "Messages ready in a queue (read on scrape, cached for a few seconds).",
            labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            f"{PREFIX}_queue_consumers", "Consumers of a queue.", labels=["queue"]
        )
        for name, (count, consumer_count) in sorted(self.values.items()):
            messages.add_metric([name], count)
            consumers.add_metric([name], consumer_count)
        return [messages, consumers]


async def _close(channel: AbstractChannel) -> None:
    try:
        if not channel.is_closed:
            await channel.close()
    except (AMQPError, ConnectionError, RuntimeError) as exc:
        log.debug("closing the metrics channel: %s", exc)

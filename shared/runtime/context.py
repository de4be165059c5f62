"""The one typed context of a handler process: broker, storage and worker pool, and the doors'
announcements (what a door adds to a job's ending, shared/doors/table.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.adapters.broker import Broker, ChannelBroker
from shared.adapters.brokers import connect_robust
from shared.adapters.storage import Storage
from shared.adapters.topology import Topology, declare, topology_for
from shared.errors import StartupError
from shared.jobs.records import JobStore
from shared.models import Job
from shared.obs.metrics import Metrics
from shared.obs.tracing import configure_tracing
from shared.runtime.cancel_registry import CancelRegistry
from shared.settings import Settings

if TYPE_CHECKING:  # the pool (and MuPDF with it) is imported only where workers run
    from shared.extraction.pool import WorkerPool

log = logging.getLogger(__name__)


class DoorAnnouncements(Protocol):
    """What one door adds to a job's terminal announcement. The core (shared/jobs/outcome.py)
    calls these through `Context.doors`, keyed by `Job.door`, and imports no door."""

    async def ended(self, ctx: Context, job: Job) -> None:
        """The job ended: before its event is published (the object drop writes the outbox of
        a job accepted by the version before, which names no target)."""

    async def webhook_body(self, ctx: Context, job: Job) -> str | None:
        """The terminal webhook's body, when the door's clients expect their own (None: ours)."""

    async def write_outbox(self, ctx: Context, job: Job) -> tuple[str, int]:
        """Write the ended job's outputs to the door's own destination (a target of kind
        `outbox`, delivered by shared/jobs/targets.py): where they are, and how many objects."""


@dataclass(frozen=True)
class Context:
    settings: Settings
    topology: Topology
    connection: AbstractRobustConnection
    channel: AbstractChannel
    """Publishing channel: publisher confirms on, unroutable messages raise."""
    broker: Broker
    """What everything publishes through: `ChannelBroker` over `channel`, which it replaces
    by a channel of its own when the broker keeps nacking it (tests: a fake)."""
    storage: Storage
    jobs: JobStore
    pool: WorkerPool | None
    doors: Mapping[str, DoorAnnouncements]
    """Each door's additions to a job's ending, by `Job.door` (shared/doors/table.py)."""
    metrics: Metrics = field(default_factory=Metrics)
    """This process's Prometheus metrics (shared/obs/metrics.py)."""
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    """Cancel requests heard on the control exchange (extract processes)."""

    def for_extraction(self) -> ExtractContext:
        """This context as the extract side's, whose pool is there.

        Raises:
            StartupError: it was opened without a worker pool (`with_pool=False`).
        """
        if self.pool is None:
            raise StartupError("the extract handler needs a worker pool (open_context with_pool)")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return ExtractContext(**{**fields, "pool": self.pool})


@dataclass(frozen=True)
class ExtractContext(Context):
    """The extract side's context: the same, with its worker pool typed as there."""

    pool: WorkerPool


@asynccontextmanager
async def open_context(
    settings: Settings,
    s3_endpoint: str,
    *,
    name: str,
    doors: Mapping[str, DoorAnnouncements],
    with_pool: bool = False,
) -> AsyncIterator[Context]:
    """Connect to the broker and storage, declare the topology, and close all in reverse order."""
    configure_tracing(f"pdfrelay-{name}")
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        storage = Storage(settings, s3_endpoint)
        stack.callback(storage.close)
        await storage.ensure_bucket()

        connection = await connect_robust(
            settings.amqp_url.get_secret_value(),
            client_properties={"connection_name": f"pdfrelay-{name}"},
        )
        stack.push_async_callback(connection.close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = topology_for(settings)
        await declare(channel, topology)

        pool = None
        if with_pool:
            from shared.extraction.pool import WorkerPool

            pool = WorkerPool(
                settings.extract_workers,
                timeout_s=settings.job_timeout_s,
                memory_mb=settings.worker_memory_mb,
                trace_dir=settings.extract_trace_dir,
                max_jobs=settings.worker_max_jobs,
                nice=settings.worker_nice,
            )
            stack.callback(pool.kill_all)
            await pool.start()
            metrics.watch_pool(pool)
        metrics.watch_queues(connection, [q.name for q in topology.queues()])
        yield Context(
            settings=settings,
            topology=topology,
            connection=connection,
            channel=channel,
            broker=ChannelBroker(channel, connection),
            storage=storage,
            jobs=JobStore(storage),
            pool=pool,
            doors=doors,
            metrics=metrics,
        )

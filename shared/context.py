"""The one typed context of a handler process: broker, storage and worker pool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from infra.topology import Topology, declare, topology_for
from shared.brokers import connect_robust
from shared.cancel_registry import CancelRegistry
from shared.jobs import JobStore
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import Storage
from shared.tracing import configure_tracing

if TYPE_CHECKING:  # the pool (and MuPDF with it) is imported only where workers run
    from shared.pool import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    settings: Settings
    topology: Topology
    connection: AbstractRobustConnection
    channel: AbstractChannel
    """Publishing channel: publisher confirms on, unroutable messages raise."""
    storage: Storage
    jobs: JobStore
    pool: WorkerPool | None
    metrics: Metrics = field(default_factory=Metrics)
    """This process's Prometheus metrics (shared/metrics.py)."""
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    """Cancel requests heard on the control exchange (extract processes)."""


@asynccontextmanager
async def open_context(
    settings: Settings, s3_endpoint: str, *, name: str, with_pool: bool = False
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
            from shared.pool import WorkerPool

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
            storage=storage,
            jobs=JobStore(storage),
            pool=pool,
            metrics=metrics,
        )

"""`GET /v1/console/ops` (the depth of every queue of the service, workers, pages/s, failures
of the last hour, parked webhooks of the tenant) and
`POST /v1/console/dead-webhooks/{job_id}/replay`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from handlers import jobs_api
from handlers.http.common import CTX, tenant_of
from shared.errors import JobNotFound
from shared.jobs.listing import MAX_LIMIT, JobFilter, list_jobs
from shared.jobs.throughput import QUEUE_PROBE_TTL_S
from shared.models import JobStatus, utcnow
from shared.runtime.context import Context
from shared.webhooks.dead import DeadLetter, list_dead, replay_dead

MAX_DEAD_SHOWN = 100


async def get_ops(request: web.Request) -> web.Response:
    """`GET /v1/console/ops`."""
    ctx = request.app[CTX]
    tenant = tenant_of(request)
    api = request.app.get(jobs_api.API)
    topo = ctx.topology
    # Every queue of the service (its topology), read by passive declares: service-wide, as
    # the broker knows them (the retry ladder, the doors, the llm and preview queues too).
    names = [q.name for q in topo.queues()]
    depths = await ctx.metrics.queue_depths(names, QUEUE_PROBE_TTL_S)
    queues = [
        {
            "name": name.removeprefix(f"{topo.ns}."),
            "ready": d[0] if d else None,
            "consumers": d[1] if d else None,
        }
        for name, d in depths.items()
    ]
    pool = ctx.pool
    failed = await list_jobs(
        ctx.jobs,
        tenant,
        JobFilter(
            statuses=frozenset({JobStatus.FAILED}),
            created_after=utcnow() - timedelta(hours=1),
        ),
        MAX_LIMIT,
        None,
        ended=api.ended if api is not None else None,
    )
    body: dict[str, Any] = {
        "queues": queues,
        "workers": {
            "busy": pool.busy if pool is not None else None,
            "size": pool.workers if pool is not None else None,
        },
        "pages_per_s": api.meter.pages_per_s if api is not None else None,
        "failed_last_hour": len(failed.jobs),
        "failed_last_hour_more": failed.next_cursor is not None,
        "dead_webhooks": [vars(d) for d in await _own_dead(ctx, tenant)],
    }
    return web.json_response(body)


async def replay(request: web.Request) -> web.Response:
    """`POST /v1/console/dead-webhooks/{job_id}/replay`."""
    ctx = request.app[CTX]
    job = await ctx.jobs.get(request.match_info["job_id"], tenant_of(request))
    count = await replay_dead(ctx.settings, job_id=job.job_id)
    return web.json_response({"job_id": job.job_id, "replayed": count})


async def _own_dead(ctx: Context, tenant: str) -> list[DeadLetter]:
    """The parked deliveries of the tenant's own jobs (another tenant's are not shown)."""
    own: list[DeadLetter] = []
    for dead in await list_dead(ctx.settings, MAX_DEAD_SHOWN):
        if dead.job_id is None:
            continue
        try:
            await ctx.jobs.get(dead.job_id, tenant)
        except JobNotFound:
            continue
        own.append(dead)
    return own

"""`pdfrelay sweep`: apply the retention once (for a cron job; every ingress also sweeps hourly)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import Any

from shared.adapters.storage import Storage
from shared.jobs.records import JobStore
from shared.jobs.retention import apply_lifecycle, sweep
from shared.settings import Settings


async def _sweep(settings: Settings, endpoint: str, days: float) -> None:
    storage = Storage(settings, endpoint)
    try:
        jobs = JobStore(storage)
        retention = timedelta(days=days)
        lifecycle = await apply_lifecycle(jobs, retention)
        report = await sweep(jobs, retention)
    finally:
        storage.close()
    print(
        f"deleted {report.jobs_deleted} jobs older than {days:g} days "
        f"(kept {report.jobs_kept_running} that have not ended), "
        f"{report.idempotency_keys_deleted} idempotency keys, "
        f"{report.quota_holds_deleted} stale quota holds; "
        f"S3 lifecycle rules {'set' if lifecycle else 'not supported by this server'}"
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.s3_endpoint:
        print("PDFRELAY_S3_ENDPOINT is required for `pdfrelay sweep`", file=sys.stderr)
        return 2
    days = args.days if args.days is not None else settings.retention_days
    if days <= 0:
        print("retention is off (PDFRELAY_RETENTION_DAYS=0): nothing to do", file=sys.stderr)
        return 0
    asyncio.run(_sweep(settings, settings.s3_endpoint, days))
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "sweep", help="delete jobs that ended more than PDFRELAY_RETENTION_DAYS ago, once"
    )
    parser.add_argument(
        "--days", type=float, help="this retention instead of PDFRELAY_RETENTION_DAYS"
    )
    parser.set_defaults(func=cmd_sweep)

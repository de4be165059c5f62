"""Scenario 1: extraction workers and whole extract handlers SIGKILLed during a batch."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import LONG, document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration

PLAN = ("workers", "workers", "handler", "workers", "handler")
"""What each round kills, on a long document's first progress event."""


@pytest.mark.timeout(240)
async def test_killed_workers_and_handlers_lose_no_job(fault_settings: Any, tmp_path: Path) -> None:
    settings = fault_settings(extract_workers=2, extract_delivery_limit=10)
    async with open_service(settings, tmp_path / "logs") as svc:
        await svc.serve_ingress()
        svc.run_inproc("webhooks")
        async with Ledger(
            "1-worker-kill",
            "Worker processes and whole extract handlers SIGKILLed during a batch",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            rec = await ledger.receiver("hook")
            extract = await svc.spawn("extract")
            docs = [document(i, LONG if i % 2 else 2) for i in range(14)]
            await asyncio.gather(*(ledger.upload(pdf, w, receiver=rec) for pdf, w in docs))
            assert ledger.counts.acknowledged == len(docs)

            worker_kills = handler_kills = 0
            seen = 0
            for step in PLAN:
                while True:
                    seen = await ledger.next_progress(seen, min_pages=LONG) + 1
                    if step == "handler":
                        # The whole handler: process, forkserver and workers; then a new one.
                        async with ledger.fault("extract handler SIGKILL → restarted"):
                            extract.kill_all()
                            assert await extract.wait() == -signal.SIGKILL
                            handler_kills += 1
                            extract = await svc.spawn("extract")
                        break
                    workers = extract.workers()
                    if not workers:
                        continue  # that extraction ended before the kill: take the next one
                    async with ledger.fault("worker processes SIGKILL"):
                        for pid in workers:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                                worker_kills += 1
                    break
            ledger.figures.update(
                worker_processes_killed=worker_kills,
                handlers_killed=handler_kills,
                extract_handlers_started=handler_kills + 1,
            )
            await ledger.check(within=120, refused_ok=False)
        assert ledger.counts.completed == len(docs)
        assert worker_kills >= 3
        assert "Traceback" not in extract.text or "WorkerCrashed" in extract.text

"""Scenario 5: a document that kills its worker on every attempt, among healthy ones."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from shared.obs.logs import job_id_var
from tests.reliability.harness import document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_poison_is_dead_lettered_its_job_fails_and_the_queue_flows(
    fault_settings: Any, tmp_path: Path
) -> None:
    limit = 2
    settings = fault_settings(extract_workers=2, extract_delivery_limit=limit)
    async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
        await svc.serve_ingress()
        svc.run_inproc("webhooks")
        assert svc.ctx.pool is not None
        async with Ledger(
            "5-poison",
            "A document that kills its worker on every attempt, among healthy ones",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            rec = await ledger.receiver("hook")
            poison_pdf, _ = document(999)
            poison = await ledger.upload(
                poison_pdf, (), receiver=rec, outcome="failed", error_code="EXTRACTION_CRASHED"
            )
            assert poison.job_id is not None
            kills: list[int] = []

            def kill_poison(pid: int) -> None:
                # The worker of the poison job dies at once, every time (a segfault, say).
                if job_id_var.get() == poison.job_id:
                    kills.append(pid)
                    os.kill(pid, signal.SIGKILL)

            svc.ctx.pool.on_start.append(kill_poison)
            before = [document(i) for i in range(6)]
            await asyncio.gather(*(ledger.upload(pdf, w, receiver=rec) for pdf, w in before))
            async with ledger.fault("poison document in the queue"):
                svc.run_inproc("extract")
                # Healthy documents sent while the poison is being retried get through too.
                after = [document(i) for i in range(100, 106)]
                await asyncio.gather(*(ledger.upload(pdf, w, receiver=rec) for pdf, w in after))
                async with asyncio.timeout(60), ledger.changed:
                    await ledger.changed.wait_for(lambda: poison.job_id in ledger.events)
            ledger.figures.update(worker_kills=len(kills), delivery_limit=limit)
            await ledger.check(within=60, refused_ok=False)
        # The first delivery and `limit` redeliveries, then the dead-letter queue.
        assert len(kills) == limit + 1
        assert ledger.counts.failed == 1
        assert ledger.counts.completed == len(before) + len(after)
        dead = await svc.ctx.channel.declare_queue(svc.ctx.topology.extract_dead, passive=True)
        assert dead.declaration_result.message_count == 0

"""Scenario 4: a webhook receiver down for several ladder steps, and one that hangs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import document, open_service, watch_logs
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration

STEPS_DOWN = 4
"""Attempts that fail (connection refused) before the receiver comes back."""


@pytest.mark.timeout(150)
async def test_receiver_down_then_back_gets_everything_and_a_hung_one_stalls_nobody(
    fault_settings: Any, tmp_path: Path
) -> None:
    settings = fault_settings(
        webhook_retry_schedule="200ms,400ms,600ms,800ms,1s,2s,3s", webhook_timeout_s=2.0
    )
    async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
        await svc.serve_ingress()
        svc.run_inproc("extract", "webhooks")
        async with Ledger(
            "4-receiver-outage",
            "A webhook receiver refuses connections for several ladder steps; another hangs",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            down = await ledger.receiver("down", proxied=True)
            hung = await ledger.receiver("hung")
            healthy = await ledger.receiver("healthy")
            assert down.proxy is not None
            hung.hold()
            with watch_logs("handlers.webhooks") as logs:
                async with ledger.fault("receiver refusing connections"):
                    await down.proxy.cut()
                    jobs: dict[str, list[str]] = {r.name: [] for r in (down, hung, healthy)}
                    for i in range(12):
                        rec = (down, hung, healthy)[i % 3]
                        pdf, words = document(i)
                        up = await ledger.upload(pdf, words, receiver=rec)
                        assert up.job_id is not None, up.body
                        jobs[rec.name].append(up.job_id)

                    # The healthy receiver gets all of its deliveries meanwhile.
                    async with asyncio.timeout(60), ledger.changed:
                        await ledger.changed.wait_for(
                            lambda: {c.job_id for c in healthy.calls} >= set(jobs["healthy"])
                        )
                    ledger.figures["healthy_delivered_while_others_failed_s"] = round(
                        max(c.at for c in healthy.calls) - ledger.faults[0].start, 3
                    )
                    assert hung.held >= 1
                    assert not hung.calls

                    def down_long_enough() -> bool:
                        return all(
                            logs.count(f"job {job_id}, attempt {STEPS_DOWN}: retry") > 0
                            for job_id in jobs["down"]
                        )

                    await logs.wait_for(down_long_enough, within=60)
                    await down.proxy.restore()
                restored = time.monotonic()
                async with asyncio.timeout(60), ledger.changed:
                    await ledger.changed.wait_for(
                        lambda: {c.job_id for c in down.calls} >= set(jobs["down"])
                    )
                ledger.figures["down_receiver_recovery_s"] = round(
                    max(c.at for c in down.calls) - restored, 3
                )
                hung.release()
                await ledger.settle(60)
                ledger.figures["attempts_logged"] = logs.count(", attempt ")
            await ledger.check(within=60, refused_ok=False)
        for job_id in jobs["down"]:
            state = await svc.ctx.jobs.webhook_state(job_id)
            assert state is not None
            assert state.state == "delivered"
            assert state.attempts > STEPS_DOWN

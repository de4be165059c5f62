"""A batch survives its extract handler being SIGKILLed mid-batch: every item ends, and exactly
one `batch.completed` is queued and delivered, with the right counts."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from handlers import batches as batch_handler
from pdfrelay_client import AsyncClient
from tests.integration.test_batches import Arbiter, batch_form
from tests.integration.test_webhooks import receiver, status
from tests.reliability.harness import LONG, document, open_service

pytestmark = pytest.mark.integration

ITEMS = 8


@pytest.mark.timeout(240)
async def test_extract_handler_killed_mid_batch_one_batch_completed(
    fault_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arbiter = Arbiter(monkeypatch)
    settings = fault_settings(extract_workers=2, progress_after_s=0)
    async with open_service(settings, tmp_path / "logs") as svc:
        base = await svc.serve_ingress()
        svc.run_inproc("webhooks")
        svc.tasks.append(asyncio.create_task(batch_handler.serve(svc.ctx, svc.stop)))
        async with receiver(status(204)) as rec, AsyncClient(base) as client:
            extract = await svc.spawn("extract")
            files = [(f"{i}.pdf", document(i, LONG if i % 2 else 2)[0]) for i in range(ITEMS)]
            resp = await svc.http.post(
                f"{base}/v1/batches", data=batch_form(files, webhook_url=rec.url)
            )
            assert resp.status == 202, await resp.text()
            batch = await resp.json()
            long_job = batch["items"][1]["job_id"]
            async for job in client.events(long_job):  # mid-extraction of a long item
                if job.status == "processing":
                    break
            extract.kill_all()
            assert await extract.wait() == -signal.SIGKILL
            extract = await svc.spawn("extract")

            (call,) = await rec.wait_calls(1, within=180)
            assert call.headers["webhook-id"] == f"msg_{batch['batch_id']}_batch_completed"
            done = await client.get_batch(batch["batch_id"])
            assert done.status == "completed"
            assert done.counts["completed"] == ITEMS
            assert done.counts["pending"] == 0
            # The kill landed mid-extraction: some item ran again in the new handler.
            records = [await svc.ctx.jobs.get(i.job_id, "default") for i in done.items if i.job_id]
            assert max(r.attempts for r in records) >= 2

            # Whatever the new handler still re-announces is published before it stops.
            extract.terminate()
            assert await extract.wait() == 0
            await arbiter.drained(svc.ctx)
            assert [d.event_type for d in arbiter.queued] == ["batch.completed"]
            assert len(rec.calls) == 1

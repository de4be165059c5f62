"""Scenario 7: SIGTERM to `pdfrelay run extract` during a batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import LONG, document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(
    fault_settings: Any, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    settings = fault_settings(extract_workers=2, extract_trace_dir=str(trace))
    async with open_service(settings, tmp_path / "logs") as svc:
        await svc.serve_ingress()
        svc.run_inproc("webhooks")
        async with Ledger(
            "7-graceful-shutdown",
            "SIGTERM to `pdfrelay run extract` during a batch, then a new handler",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            rec = await ledger.receiver("hook")
            extract = await svc.spawn("extract")
            docs = [document(i, LONG if i % 3 == 0 else 2) for i in range(10)]
            await asyncio.gather(*(ledger.upload(pdf, w, receiver=rec) for pdf, w in docs))

            await ledger.next_progress(0, min_pages=LONG)
            in_flight = len(extract.workers())
            async with ledger.fault("SIGTERM to the extract handler"):
                sent = time.monotonic()
                extract.terminate()
                code = await extract.wait(60)
                exit_s = time.monotonic() - sent
            assert code == 0, extract.text[-3000:]
            assert "Traceback" not in extract.text
            ended_before_exit = len(ledger.events)
            assert ended_before_exit >= 1  # the job it was extracting was finished, not dropped

            await svc.spawn("extract")
            ledger.figures.update(
                worker_processes_at_sigterm=in_flight,
                jobs_ended_by_the_stopped_handler=ended_before_exit,
                sigterm_to_exit_s=round(exit_s, 3),
            )
            assert await ledger.settle(90)
            extractions = sum(len(f.read_text().splitlines()) for f in trace.iterdir())
            ledger.figures["extractions"] = extractions
            await ledger.check(within=90, refused_ok=False)
    # Every document was extracted exactly once: nothing in flight was dropped or redone.
    assert extractions == len(docs)

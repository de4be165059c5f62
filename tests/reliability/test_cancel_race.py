"""A fuzzing finding, pinned down: a cancel that lands while a job's cache hit is being stored.

The ingress ends a job whose record still says `queued` at once; the extract handler may hold
that job's task already (a cache hit needs no worker slot, so the record never said
`processing`). Before the fix the handler then stored `completed` over `cancelled`, and the job
had two different endings; now the first ending stands and is announced again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shared.jobs import cache
from tests.reliability.harness import document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_a_cancel_during_a_cache_hit_ends_the_job_once(
    fault_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fault_settings(extract_workers=1)
    async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
        await svc.serve_ingress()
        svc.run_inproc("extract", "webhooks")
        async with Ledger(
            "9c-cancel-during-cache-hit",
            "DELETE of a job whose cache hit the extract handler is storing",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            rec = await ledger.receiver("hook")
            pdf, words = document(1)
            await ledger.upload(pdf, words, receiver=rec)
            assert await ledger.settle(60)

            reached, release = asyncio.Event(), asyncio.Event()
            lookup = cache.lookup

            async def held_lookup(*args: Any) -> cache.Lookup:
                found = await lookup(*args)
                reached.set()
                await release.wait()
                return found

            monkeypatch.setattr(cache, "lookup", held_lookup)
            again = await ledger.upload(pdf, words, receiver=rec, outcome="cancelled")
            async with asyncio.timeout(30):
                await reached.wait()
            async with ledger.fault("DELETE while the hit is being stored"):
                async with svc.http.delete(f"{svc.base_url}/v1/jobs/{again.job_id}") as resp:
                    assert resp.status in (200, 202), await resp.text()
                    assert (await resp.json())["status"] == "cancelled"
                release.set()
            await ledger.check(within=60, refused_ok=False)
        assert ledger.counts.cancelled == 1

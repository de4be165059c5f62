"""Scenario 6: a flood of uploads against a short queue: 202s up to the limit, then 503s."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from tests.reliability.harness import open_service
from tests.reliability.ledger import Ledger, Upload

pytestmark = pytest.mark.integration

LIMIT = 5
FLOOD = 60
PAD = 512 * 1024
"""Incompressible bytes in every flooded PDF, so that buffering them would show in memory."""
CONCURRENCY = 16
START = LIMIT + CONCURRENCY
"""The first `LIMIT` uploads fill the queue, the next `CONCURRENCY` warm the refusal path up."""
GROWTH_KIB = 8 * 1024


def padded(i: int) -> tuple[bytes, tuple[str, ...]]:
    word = f"flood{i}x"
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), f"document {word}")
    doc.embfile_add("pad.bin", os.urandom(PAD))
    data: bytes = doc.tobytes()
    doc.close()
    return data, (word,)


@pytest.mark.timeout(150)
async def test_flood_is_refused_past_the_limit_in_flat_memory_then_accepted(
    fault_settings: Any, tmp_path: Path
) -> None:
    settings = fault_settings(max_queue_length=LIMIT, extract_workers=2)
    async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
        ingress = await svc.spawn("ingress")
        async with Ledger(
            "6-backpressure",
            f"A flood of {FLOOD} uploads of {PAD // 1024} KiB against a queue of {LIMIT}",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            rec = await ledger.receiver("hook")
            svc.run_inproc("webhooks")
            docs = [padded(i) for i in range(START + FLOOD)]
            for pdf, words in docs[:LIMIT]:
                assert (await ledger.upload(pdf, words, receiver=rec)).status == 202
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(pdf: bytes, words: tuple[str, ...]) -> Upload:
                async with gate:
                    return await ledger.upload(pdf, words, receiver=rec)

            # Warm the refusal path up at the flood's concurrency, then measure the flood.
            warm = await asyncio.gather(*(one(p, w) for p, w in docs[LIMIT:START]))
            assert {u.status for u in warm} == {503}
            rss_before = ingress.rss_kb()
            half = START + FLOOD // 2
            async with ledger.fault(f"flood of {FLOOD} uploads against a full queue"):
                flood = await asyncio.gather(*(one(p, w) for p, w in docs[START:half]))
                rss_half = ingress.rss_kb()
                flood += await asyncio.gather(*(one(p, w) for p, w in docs[half:]))
            rss_after = ingress.rss_kb()
            assert {u.status for u in flood} == {503}
            assert all(u.retry_after for u in flood)
            assert {u.body["error"]["code"] for u in flood} == {"QUEUE_FULL"}
            assert ledger.counts.acknowledged == LIMIT
            ledger.figures.update(
                ingress_rss_before_kib=rss_before,
                ingress_rss_half_kib=rss_half,
                ingress_rss_after_kib=rss_after,
                flooded_mib=round(len(flood) * len(docs[0][0]) / 2**20, 1),
            )
            # Refused uploads leave nothing behind: no record, no stored PDF.
            assert len(await svc.ctx.storage.list_keys("uploads/")) == LIMIT
            assert len(await svc.ctx.storage.list_keys("index/")) == LIMIT

            # Once the workers drain the queue, uploads are accepted again.
            svc.run_inproc("extract")
            again = 0
            async with asyncio.timeout(60):
                while again < 3:
                    pdf, words = padded(1000 + again)
                    up = await ledger.upload(pdf, words, receiver=rec)
                    if up.status == 202:
                        again += 1
                        continue
                    assert up.status == 503
                    # Wait for the next job to end rather than retrying blindly.
                    await ledger.next_end()
            await ledger.check(within=60)
        # Flat: some MiB of allocator noise at most, where buffering would be the flood's size.
        assert rss_after - rss_before < GROWTH_KIB, (rss_before, rss_half, rss_after)

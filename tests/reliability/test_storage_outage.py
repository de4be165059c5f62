"""Scenario 3: the S3 server unreachable for a few seconds, under load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.reliability.harness import LONG, document, fault_proxy, open_service, watch_logs
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration

RETRIES_DURING_OUTAGE = 2
"""Backoff rounds one message must have been through before S3 comes back."""


@pytest.mark.timeout(150)
async def test_storage_outage_is_retried_with_backoff_and_fails_no_job(
    fault_settings: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    port = urlsplit(s3_endpoint).port
    assert port is not None
    async with fault_proxy(port) as proxy:
        settings = fault_settings(
            s3_endpoint=proxy.url, transient_backoff_s=0.5, transient_retry_budget=60
        )
        async with open_service(settings, tmp_path / "logs", with_pool=True) as svc:
            await svc.serve_ingress()
            svc.run_inproc("extract", "webhooks")
            async with Ledger(
                "3-storage-outage",
                "The S3 server refuses and resets connections for a few seconds",
                settings,
                svc.http,
                svc.base_url,
            ) as ledger:
                rec = await ledger.receiver("hook")
                docs = [document(i, LONG if i % 4 == 0 else 2) for i in range(12)]
                with watch_logs("shared.runtime.consumer", 30) as logs:
                    await asyncio.gather(*(ledger.upload(p, w, receiver=rec) for p, w in docs))
                    await ledger.next_progress(0, min_pages=LONG)
                    async with ledger.fault("S3 connections refused and reset"):
                        await proxy.cut()
                        ready = await svc.http.get(f"{svc.base_url}/readyz")
                        assert ready.status == 503
                        assert ready.headers["Retry-After"]
                        assert (await ready.json())["checks"]["storage"] != "ok"
                        # Uploads meanwhile are refused with 503 + Retry-After, not lost.
                        for i in range(3):
                            pdf, words = document(200 + i)
                            refused = await ledger.upload(pdf, words, receiver=rec)
                            assert refused.status == 503, refused.body
                            assert refused.retry_after
                        # Hold the outage until a message has been retried several times.
                        await logs.wait_for(
                            lambda: logs.count(f"transient failure {RETRIES_DURING_OUTAGE} of") > 0,
                            within=60,
                        )
                        assert ledger.counts.failed == 0
                        await proxy.restore()
                    restored = time.monotonic()
                    ready = await svc.http.get(f"{svc.base_url}/readyz")
                    assert ready.status == 200, await ready.text()
                    ledger.figures["readyz_recovered_s"] = round(time.monotonic() - restored, 3)
                    after = [document(i) for i in range(300, 304)]
                    await asyncio.gather(*(ledger.upload(p, w, receiver=rec) for p, w in after))
                    await ledger.settle(90)
                ledger.figures.update(
                    transient_failures_logged=logs.count("transient failure"),
                    dead_lettered=logs.count("dead-lettering"),
                    proxy_connections=proxy.connections,
                )
                await ledger.check(within=90)
            assert ledger.counts.failed == 0
            assert ledger.counts.completed == len(docs) + len(after)
            assert logs.count("dead-lettering") == 0

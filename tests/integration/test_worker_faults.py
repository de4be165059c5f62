"""Worker processes that die or hang: retried, dead-lettered, or timed out — every job ends."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from shared.extraction.pool import WorkerPool
from tests.conftest import running_stack
from tests.factories import make_pdf
from tests.helpers import upload, wait_done

pytestmark = pytest.mark.integration


def kill_first_worker(pool: WorkerPool) -> list[int]:
    """SIGKILL the first worker the pool starts from now on; returns the killed pids."""
    killed: list[int] = []

    def kill_first(pid: int) -> None:
        if not killed:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    pool.on_start.append(kill_first)
    return killed


async def test_killed_worker_is_replaced_and_the_job_completes(make_settings: Any) -> None:
    async with running_stack(make_settings(extract_delivery_limit=3)) as stack:
        assert stack.ctx.pool is not None
        killed = kill_first_worker(stack.ctx.pool)
        job = await upload(stack, make_pdf(["survivor text"]))
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "completed"
        assert len(killed) == 1
        assert stack.ctx.pool.crashed == 1
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/result")
        assert "survivor text" in (await resp.json())["pages"][0]["text"]

        # The next job runs on a fresh worker as usual.
        nxt = await upload(stack, make_pdf(["next one"]))
        assert (await wait_done(stack, nxt["job_id"]))["status"] == "completed"


async def test_poison_document_is_dead_lettered_and_its_job_fails(make_settings: Any) -> None:
    async with running_stack(make_settings(extract_delivery_limit=2)) as stack:
        assert stack.ctx.pool is not None
        poison = make_pdf(["poison"])
        kills: list[int] = []

        def kill_always(pid: int) -> None:
            kills.append(pid)
            os.kill(pid, signal.SIGKILL)

        stack.ctx.pool.on_start.append(kill_always)
        job = await upload(stack, poison)
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "EXTRACTION_CRASHED"
        # The first delivery plus the limit's redeliveries, then the dead-letter queue.
        assert len(kills) == 3

        # The queue keeps flowing.
        stack.ctx.pool.on_start.clear()
        ok = await upload(stack, make_pdf(["healthy"]))
        assert (await wait_done(stack, ok["job_id"]))["status"] == "completed"


async def test_hung_worker_times_out(make_settings: Any) -> None:
    async with running_stack(make_settings(job_timeout_s=1.0)) as stack:
        assert stack.ctx.pool is not None
        frozen: list[int] = []

        def freeze_first(pid: int) -> None:
            if not frozen:
                frozen.append(pid)
                os.kill(pid, signal.SIGSTOP)

        stack.ctx.pool.on_start.append(freeze_first)
        job = await upload(stack, make_pdf(["stuck"]))
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "EXTRACTION_TIMEOUT"
        with pytest.raises(ProcessLookupError):
            os.kill(frozen[0], 0)

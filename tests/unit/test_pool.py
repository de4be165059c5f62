"""The worker pool reuses a process for several documents and retires it on any failure."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from shared.errors import PermanentError, WorkerCrashed
from shared.extraction import ExtractLimits
from shared.extraction.pool import WorkerPool, WorkRequest, _Slots
from shared.models import ExtractOptions
from tests.factories import make_pdf


def _request(tmp_path: Path, name: str, data: bytes) -> WorkRequest:
    folder = tmp_path / name
    folder.mkdir()
    pdf = folder / "source.pdf"
    pdf.write_bytes(data)
    return WorkRequest(
        pdf_path=str(pdf),
        out_dir=str(folder),
        options=ExtractOptions(),
        limits=ExtractLimits(max_pages=100, max_file_bytes=10_000_000),
    )


def _ignore(done: int, total: int) -> None:
    pass


@pytest.mark.timeout(120)
async def test_worker_is_reused_then_recycled_after_max_jobs(tmp_path: Path) -> None:
    pool = WorkerPool(1, timeout_s=60, memory_mb=2048, max_jobs=2)
    pids: list[int] = []
    pool.on_start.append(pids.append)
    try:
        for i in range(3):
            out = await pool.run(_request(tmp_path, f"d{i}", make_pdf([f"doc {i}"])), _ignore)
            assert f"doc {i}" in Path(out.result_path).read_text()
    finally:
        pool.kill_all()
    # Observers hear of every document, with the pid that runs it.
    assert pids[0] == pids[1] != pids[2]
    assert pool.started == 3
    assert pool.processes == 2


@pytest.mark.timeout(120)
async def test_worker_is_retired_after_an_engine_error_or_a_crash(tmp_path: Path) -> None:
    pool = WorkerPool(1, timeout_s=60, memory_mb=2048, max_jobs=50)
    pids: list[int] = []
    pool.on_start.append(pids.append)
    try:
        with pytest.raises(PermanentError):
            await pool.run(_request(tmp_path, "bad", b"%PDF-1.7\nnot really"), _ignore)
        await pool.run(_request(tmp_path, "ok", make_pdf(["fine"])), _ignore)
        assert pids[0] != pids[1]

        def kill(pid: int) -> None:
            os.kill(pid, signal.SIGKILL)

        pool.on_start.append(kill)
        with pytest.raises(WorkerCrashed):
            await pool.run(_request(tmp_path, "killed", make_pdf(["x"])), _ignore)
        pool.on_start.remove(kill)
        out = await pool.run(_request(tmp_path, "after", make_pdf(["after"])), _ignore)
        assert "after" in Path(out.result_path).read_text()
    finally:
        pool.kill_all()
    # After the engine error and after the crash the next document gets a new process; after a
    # success the same one.
    assert pids[0] != pids[1] == pids[2] != pids[3]
    assert pool.crashed == 1


async def test_a_waiting_whole_job_gets_the_next_slot_before_waiting_ranges() -> None:
    slots = _Slots(1)
    order: list[str] = []
    release = asyncio.Event()

    async def take(name: str, background: bool) -> None:
        async with slots.hold(background):
            order.append(name)
            if name == "range 1":
                await release.wait()

    first = asyncio.create_task(take("range 1", True))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(take("range 2", True))]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(take("small", False)))
    cancelled = asyncio.create_task(take("cancelled", False))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["range 1", "small", "range 2"]
    async with asyncio.timeout(1), slots.hold(False):  # every slot came back
        pass

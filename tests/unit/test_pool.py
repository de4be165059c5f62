"""The worker pool reuses a process for several documents and retires it on any failure."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from shared.errors import PermanentError, WorkerCrashed
from shared.extraction import ExtractLimits, HeldDocument, hostile, inflate
from shared.extraction.engine import worth_splitting
from shared.extraction.pool import WorkerPool, WorkRequest, _one, _Slots
from shared.models import ExtractOptions
from tests.factories import make_pdf
from tests.unit import pdfgen


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


def _range(req: WorkRequest, pages: str, out: Path) -> WorkRequest:
    out.mkdir()
    return replace(
        req,
        out_dir=str(out),
        options=ExtractOptions(pages=pages),
        limits=replace(req.limits, range_part=True),
    )


@pytest.mark.timeout(120)
async def test_ranges_of_one_file_share_a_worker_s_open_document_and_nothing_else_does(
    tmp_path: Path,
) -> None:
    """A worker keeps a range's document open for its next range of the same file only: a
    whole document, or another file at the same path, is read afresh."""
    pool = WorkerPool(1, timeout_s=60, memory_mb=2048)
    first = _request(tmp_path, "a", make_pdf([f"first file page {i}" for i in range(1, 7)]))
    try:
        texts = []
        for pages in ("1-3", "4-"):
            out = await pool.run(_range(first, pages, tmp_path / f"a{pages}"), _ignore)
            texts.append(Path(out.result_path).read_text())
        assert "first file page 3" in texts[0]
        assert "first file page 4" not in texts[0]
        assert "first file page 6" in texts[1]
        assert "first file page 3" not in texts[1]
        other = _request(tmp_path, "b", make_pdf(["another document"]))
        out = await pool.run(other, _ignore)
        assert "another document" in Path(out.result_path).read_text()
        out = await pool.run(_range(first, "1-3", tmp_path / "again"), _ignore)
        assert "first file page 2" in Path(out.result_path).read_text()
        Path(first.pdf_path).write_bytes(make_pdf([f"second file page {i}" for i in range(5)]))
        out = await pool.run(_range(first, "1-3", tmp_path / "rewritten"), _ignore)
        assert "second file page 1" in Path(out.result_path).read_text()
    finally:
        pool.kill_all()
    assert pool.processes == 1  # all in one worker


class _Pipe:
    """The worker's end of its pipe, in this process: what `_one` sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, ...]] = []

    def send(self, msg: tuple[object, ...]) -> None:
        self.sent.append(msg)


def _probe(tmp_path: Path, name: str, data: bytes, split_above: int) -> WorkRequest:
    req = _request(tmp_path, name, data)
    return replace(
        req, limits=replace(req.limits, max_inflated_bytes=1 << 30), split_above=split_above
    )


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The limits the decompression scan is called with from now on."""
    scans: list[int | None] = []
    real = inflate.check_inflated

    def check_inflated(path: str, limit: int | None) -> None:
        scans.append(limit)
        real(path, limit)

    monkeypatch.setattr(hostile, "check_inflated", check_inflated)
    return scans


def test_a_probe_answers_the_page_count_of_a_document_to_split_and_extracts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = _count_scans(monkeypatch)
    held = HeldDocument()
    pipe = _Pipe()
    req = _probe(tmp_path, "big", make_pdf(["one", "two", "three"]), split_above=2)
    _one(pipe, req, None, held)  # type: ignore[arg-type]
    assert pipe.sent[-1] == ("split", 3)
    assert sorted(os.listdir(req.out_dir)) == ["source.pdf"]  # nothing written
    assert not held.is_open  # its ranges download a copy of their own: nothing kept
    assert scans == [1 << 30]


def test_a_probed_document_under_the_limit_is_extracted_from_the_same_open_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = _count_scans(monkeypatch)
    opens: list[str] = []
    real_open = hostile.open_pdf

    def open_pdf(path: str, limits: ExtractLimits) -> pymupdf.Document:
        opens.append(path)
        return real_open(path, limits)

    monkeypatch.setattr(hostile, "open_pdf", open_pdf)
    held = HeldDocument()
    pipe = _Pipe()
    req = _probe(tmp_path, "small", make_pdf(["one", "two", "three"]), split_above=3)
    _one(pipe, req, None, held)  # type: ignore[arg-type]
    kind, path, pages, processed = pipe.sent[-1][:4]
    assert (kind, pages, processed) == ("ok", 3, 3)
    assert "three" in Path(str(path)).read_text()
    assert opens == [req.pdf_path]  # opened once
    assert [s for s in scans if s is not None] == [1 << 30]  # and scanned once
    assert not held.is_open


def test_a_probe_keeps_a_document_whole_when_its_text_is_too_quick_to_split(
    tmp_path: Path,
) -> None:
    """Over the page floor, but one worker would take far less than the CPU minimum: a split's
    ranges, parts and merge would cost more than they save, so it is extracted at once."""
    pages = [f"page {n}" for n in range(6)]
    req = replace(_probe(tmp_path, "quick", make_pdf(pages), split_above=2), split_min_cpu_s=60)
    pipe = _Pipe()
    _one(pipe, req, None, HeldDocument())  # type: ignore[arg-type]
    kind, _, count, processed = pipe.sent[-1][:4]
    assert (kind, count, processed) == ("ok", 6, 6)
    # With no minimum, the same document is split, as every one over the floor was before.
    req = replace(_probe(tmp_path, "any", make_pdf(pages), split_above=2), split_min_cpu_s=0)
    _one(pipe, req, None, HeldDocument())  # type: ignore[arg-type]
    assert pipe.sent[-1] == ("split", 6)


@pytest.mark.parametrize("ocr", ["auto", "always"])
def test_a_probe_splits_a_document_whose_pages_are_to_be_ocred(tmp_path: Path, ocr: str) -> None:
    """OCR costs seconds a page: a scanned page among the samples (`auto`), or `always`, is
    reason enough, whatever the sampled text took."""
    if ocr == "auto":
        data = pdfgen.scanned_pdf(tmp_path / "scan.pdf", ["scanned"], with_text_page=True)
    else:
        data = tmp_path / "text.pdf"
        data.write_bytes(make_pdf(["one", "two"]))
    req = _probe(tmp_path, ocr, data.read_bytes(), split_above=1)
    options = req.options.model_copy(update={"ocr": ocr})
    req = replace(req, options=options, split_min_cpu_s=3600)
    pipe = _Pipe()
    _one(pipe, req, None, HeldDocument())  # type: ignore[arg-type]
    assert pipe.sent[-1] == ("split", 2)


def test_the_split_estimate_skips_a_sample_page_that_cannot_be_read() -> None:
    """A broken page among the samples is not the probe's to report (the extraction reads it
    again and warns): the estimate goes on with the others."""
    doc = pymupdf.open(stream=make_pdf([f"page {n}" for n in range(5)]), filetype="pdf")

    class Broken:
        page_count = doc.page_count

        def __getitem__(self, index: int) -> pymupdf.Page:
            if index == 0:
                raise RuntimeError("code=2: cannot find object in xref")
            return doc[index]

    broken: Any = Broken()
    options = ExtractOptions(outputs=("text",))
    assert worth_splitting(broken, options, min_cpu_s=1e-12)
    assert not worth_splitting(broken, options, min_cpu_s=3600)


def test_a_probe_refuses_a_bomb_before_any_split(tmp_path: Path) -> None:
    bomb = pdfgen.bomb_pdf(tmp_path / "bomb.pdf", side=20_000).read_bytes()
    req = _probe(tmp_path, "bomb", bomb, split_above=0)
    req = replace(req, limits=replace(req.limits, max_inflated_bytes=16 * 1024 * 1024))
    pipe = _Pipe()
    _one(pipe, req, None, HeldDocument())  # type: ignore[arg-type]
    assert pipe.sent[-1][:2] == ("error", "DECOMPRESSION_LIMIT")


@pytest.mark.timeout(120)
async def test_the_pool_returns_a_split_answer(tmp_path: Path) -> None:
    pool = WorkerPool(1, timeout_s=60, memory_mb=2048)
    try:
        req = _probe(tmp_path, "big", make_pdf(["a", "b", "c", "d"]), split_above=3)
        out = await pool.run(req, _ignore)
        assert (out.split, out.page_count, out.pages_extracted) == (True, 4, 0)
        req = _probe(tmp_path, "whole", make_pdf(["a", "b", "c", "d"]), split_above=4)
        out = await pool.run(req, _ignore)
        assert (out.split, out.page_count, out.pages_extracted) == (False, 4, 4)
    finally:
        pool.kill_all()


@pytest.mark.timeout(120)
async def test_a_document_is_split_only_when_no_other_waits_for_a_worker(tmp_path: Path) -> None:
    """Ranges pay for their parts, merge and re-parsed resources; they finish sooner only when
    a worker would otherwise idle. The first of two large documents on one worker, with the
    second waiting, is extracted whole; the second, with nobody waiting, is split."""
    pool = WorkerPool(1, timeout_s=60, memory_mb=2048)
    try:
        first = _probe(tmp_path, "first", make_pdf(["a", "b", "c", "d"]), split_above=3)
        second = _probe(tmp_path, "second", make_pdf(["a", "b", "c", "d"]), split_above=3)
        slot_taken = asyncio.Event()
        release = asyncio.Event()

        async def hold_then_release() -> None:
            slot_taken.set()
            await release.wait()

        # A third party holds the only worker until both documents are waiting for it.
        blocker = asyncio.create_task(
            pool.run(
                _probe(tmp_path, "small", make_pdf(["x"]), split_above=3),
                _ignore,
                on_slot=hold_then_release,
            )
        )
        await asyncio.wait_for(slot_taken.wait(), 30)
        runs = [asyncio.create_task(pool.run(r, _ignore)) for r in (first, second)]
        # One turn of the loop: both new tasks run up to their first wait, the slot queue (no
        # time passes; the ready tasks run in order before this one resumes).
        await asyncio.sleep(0)
        assert pool._slots.waiting == 2
        release.set()
        await blocker
        whole, split = await asyncio.gather(*runs)
        assert (whole.split, whole.pages_extracted) == (False, 4)
        assert (split.split, split.page_count) == (True, 4)
    finally:
        pool.kill_all()

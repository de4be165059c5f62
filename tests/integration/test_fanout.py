"""Page-range fan-out: large documents split into ranges, merged once, in page order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from shared.adapters.storage import ObjectNotFound
from shared.extraction import ExtractLimits, extract_document
from shared.extraction.fanout import parts_prefix
from shared.jobs.records import result_key
from shared.models import ExtractOptions
from tests.conftest import running_stack
from tests.factories import make_pdf
from tests.helpers import exited, upload, wait_done
from tests.integration.test_job_control import freezer
from tests.integration.test_worker_faults import kill_first_worker
from tests.unit import pdfgen

pytestmark = pytest.mark.integration

FANOUT = {"fanout_min_pages": 8, "fanout_min_cpu_s": 0.0, "fanout_range_pages": 3}
OPTIONS = json.dumps({"outputs": ["text", "markdown", "metadata"]})


WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
]


def _pages(n: int) -> list[str]:
    # Lines that differ beyond their digits: identical ones would read as running headers.
    return [f"{WORDS[i % 20]} {WORDS[i // 20 % 20]} notes for page {i + 1}" for i in range(n)]


def _manual(n: int) -> bytes:
    """A manual of `n` pages: a running head and page numbers, chapter headings (20 pt) on
    pages 1, 8, 15…, section headings (14 pt) on 4, 11, 18…, body text (11 pt)."""
    doc = pymupdf.open()
    body = _pages(n)
    for i in range(n):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 40), "Field Manual of the Test Suite", fontsize=9)
        y = 100.0
        if i % 7 == 0:
            page.insert_text((72, y), f"Chapter {i // 7 + 1}", fontsize=20)
            y += 40
        elif i % 7 == 3:
            page.insert_text((72, y), f"Section {i // 7 + 1}.1", fontsize=14)
            y += 30
        for line in range(12):
            page.insert_text((72, y), f"{body[i]}, line {line} of the text", fontsize=11)
            y += 14
        page.insert_text((290, 810), str(i + 1), fontsize=9)
    doc.set_metadata({"title": "Manual"})
    data: bytes = doc.tobytes()
    doc.close()
    return data


def _with_links(pdf: bytes, pages: dict[int, str]) -> bytes:
    """`pdf` with a link on each of `pages` (1-based): an external URI, or `#n` to page n."""
    doc = pymupdf.open(stream=pdf, filetype="pdf")
    for number, target in pages.items():
        link: dict[str, Any] = {"from": pymupdf.Rect(72, 72, 200, 90)}
        if target.startswith("#"):
            link.update(kind=pymupdf.LINK_GOTO, page=int(target[1:]) - 1)
        else:
            link.update(kind=pymupdf.LINK_URI, uri=target)
        doc[number - 1].insert_link(link)
    data: bytes = doc.tobytes()
    doc.close()
    return data


def _unsplit(pdf: bytes, tmp: Path) -> Any:
    """The result of extracting `pdf` in one pass, as JSON reads it back."""
    path = tmp / "whole.pdf"
    path.write_bytes(pdf)
    options = ExtractOptions(outputs=("text", "markdown", "metadata"))
    out = extract_document(str(path), options, ExtractLimits(), str(tmp), lambda d, t: None)
    return json.loads(out.result.model_dump_json())


async def _result(stack: Any, job_id: str) -> Any:
    resp = await stack.client.get(f"/v1/jobs/{job_id}/result")
    assert resp.status == 200
    return await resp.json()


async def test_a_document_too_quick_to_split_runs_whole_by_default(make_settings: Any) -> None:
    """Over the page floor, but its text takes one worker milliseconds, far under the default
    `fanout_min_cpu_s`: one worker extracts it at once, no range task, no part."""
    settings = make_settings(fanout_min_pages=8, fanout_range_pages=3)
    assert settings.fanout_min_cpu_s > 0.5
    async with running_stack(settings) as stack:
        assert stack.ctx.pool is not None
        job = await upload(stack, _manual(20), options=OPTIONS)
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "completed", done
        assert stack.ctx.pool.started == 1
        assert (await _result(stack, job["job_id"]))["page_count"] == 20


async def test_ranges_give_the_same_pages_as_one_pass(make_settings: Any, tmp_path: Path) -> None:
    links = {2: "https://example.org/two", 11: "https://example.org/eleven", 15: "#3", 19: "#20"}
    pdf = _with_links(_manual(20), links)
    whole = _unsplit(pdf, tmp_path)
    async with running_stack(make_settings(**FANOUT)) as stack:
        assert stack.ctx.pool is not None
        job = await upload(stack, pdf, options=OPTIONS)
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "completed", done
        assert done["progress"] == {"pages_done": 20, "pages_total": 20}
        # The worker that opened it counted 20 pages (nothing extracted), then seven range
        # tasks of 3 pages, each on a worker of its own run.
        assert stack.ctx.pool.started == 1 + 7
        result = await _result(stack, job["job_id"])
        assert result["pages"] == whole["pages"]
        assert result["job_id"] == job["job_id"]
        assert result["page_count"] == 20
        # Whole-document and per-page metadata alike, as if the document had not been split.
        assert result["metadata"] == whole["metadata"]
        assert result["metadata"]["title"] == "Manual"
        assert [link["page"] for link in result["metadata"]["links"]] == [2, 11]
        assert result["metadata"]["internal_link_count"] == 2
        assert len(result["metadata"]["pages"]) == 20
        # Headings, running heads and page numbers as in one pass (they need the whole document).
        assert result["markdown"] == whole["markdown"]
        assert "# Chapter 3\n" in result["markdown"]
        assert "## Section 3.1\n" in result["markdown"]
        assert "Field Manual" not in result["markdown"]
        assert [a["name"] for a in done["result"]["artifacts"]] == ["document.md"]
        # The parts are gone once merged.
        assert await stack.ctx.storage.list_keys(parts_prefix(job["job_id"])) == []


async def test_small_documents_are_not_split(make_settings: Any) -> None:
    async with running_stack(make_settings(**FANOUT)) as stack:
        assert stack.ctx.pool is not None
        job = await upload(stack, make_pdf(_pages(8)))
        assert (await wait_done(stack, job["job_id"]))["status"] == "completed"
        assert stack.ctx.pool.started == 1


async def test_a_killed_range_is_redone_and_the_result_is_whole(
    make_settings: Any, tmp_path: Path
) -> None:
    pdf = make_pdf(_pages(20))
    async with running_stack(make_settings(extract_delivery_limit=3, **FANOUT)) as stack:
        assert stack.ctx.pool is not None
        kill_first_worker(stack.ctx.pool)
        job = await upload(stack, pdf)
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "completed", done
        assert stack.ctx.pool.crashed == 1
        result = await _result(stack, job["job_id"])
        assert result["pages"] == _unsplit(pdf, tmp_path)["pages"]


async def test_a_permanent_error_in_one_range_fails_the_job_once(make_settings: Any) -> None:
    # A hung worker is the honest permanent error: the pool's time limit ends it with
    # EXTRACTION_TIMEOUT, for that range only.
    async with running_stack(make_settings(job_timeout_s=1.0, **FANOUT)) as stack:
        assert stack.ctx.pool is not None
        seen: list[int] = []

        def freeze_second(pid: int) -> None:
            seen.append(pid)
            if len(seen) == 2:
                os.kill(pid, signal.SIGSTOP)

        stack.ctx.pool.on_start.append(freeze_second)
        job = await upload(stack, make_pdf(_pages(20)))
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "EXTRACTION_TIMEOUT"
        # No merge ever ran, and a later look finds the same single outcome.
        with pytest.raises(ObjectNotFound):
            await stack.ctx.storage.stat(result_key(job["job_id"]))
        again = await wait_done(stack, job["job_id"])
        assert again["status"] == "failed"
        assert again["finished_at"] == done["finished_at"]


async def test_a_small_job_overtakes_a_huge_one(make_settings: Any) -> None:
    async with running_stack(make_settings(**FANOUT)) as stack:
        huge = await upload(stack, make_pdf(_pages(150)))
        small = await upload(stack, make_pdf(["a one-page invoice"]))
        small_done = await wait_done(stack, small["job_id"])
        huge_done = await wait_done(stack, huge["job_id"])
        assert small_done["status"] == huge_done["status"] == "completed"
        assert datetime.fromisoformat(small_done["finished_at"]) < datetime.fromisoformat(
            huge_done["finished_at"]
        )


async def test_cancel_stops_the_running_range_and_skips_the_rest(make_settings: Any) -> None:
    async with running_stack(make_settings(**FANOUT)) as stack:
        pool = stack.ctx.pool
        assert pool is not None
        pids = freezer(stack, after=1)  # the worker that counts its pages runs, ranges stop
        job = await upload(stack, make_pdf(_pages(20)))
        pid = await asyncio.wait_for(pids.get(), 30)
        resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == "cancelled"
        in_flight = pool.started  # the ranges that had a worker when the cancel came
        # Killed: a range that had no worker yet may have announced the ending first.
        await exited(pid)
        assert pool.crashed == 0
        # A job after it runs as usual.
        pool.on_start.clear()
        nxt = await upload(stack, make_pdf(["after the cancel"]))
        assert (await wait_done(stack, nxt["job_id"]))["status"] == "completed"
        assert pool.started == in_flight + 1  # no range of the cancelled job ran after it
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}")
        assert (await resp.json())["status"] == "cancelled"
        with pytest.raises(ObjectNotFound):
            await stack.ctx.storage.stat(result_key(job["job_id"]))


async def test_a_fanned_out_bomb_fails_with_decompression_limit(
    make_settings: Any, tmp_path: Path
) -> None:
    """The worker that counts its pages inflates the whole document's streams first: the bomb
    fails the job before it is split (no range repeats the scan)."""
    bomb = pdfgen.bomb_pdf(tmp_path / "bomb.pdf", side=20_000).read_bytes()  # ~50 MB inflated
    doc = pymupdf.open(stream=_manual(10), filetype="pdf")
    doc.insert_pdf(pymupdf.open(stream=bomb, filetype="pdf"))
    pdf: bytes = doc.tobytes()
    doc.close()
    settings = make_settings(**FANOUT, max_inflated_bytes=16 * 1024 * 1024)
    async with running_stack(settings) as stack:
        job = await upload(stack, pdf, options=OPTIONS)
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "DECOMPRESSION_LIMIT"
        assert done["progress"]["pages_total"] is None  # never planned as ranges
        assert stack.ctx.pool is not None
        assert stack.ctx.pool.started == 1

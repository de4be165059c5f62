"""The result cache on the real broker and S3 server: the same bytes and options, no worker."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.jobs import cache
from shared.jobs.cache import CACHE_PREFIX
from shared.jobs.records import job_result_key
from tests.conftest import Stack
from tests.factories import make_pdf
from tests.helpers import wait_done

pytestmark = pytest.mark.integration

CORPUS_MANUAL = Path("/work/shared/corpus/en-beamer-userguide.pdf")
OPTIONS = json.dumps({"outputs": ["text", "markdown", "metadata"]})


def cache_hits(stack: Stack) -> float:
    value = stack.ctx.metrics.registry.get_sample_value("pdfrelay_cache_hits_total")
    return value or 0.0


async def run_job(stack: Stack, data: bytes, options: str = "{}") -> Any:
    form = aiohttp.FormData()
    # A stream, not bytes: aiohttp warns (an error here) about large raw bytes bodies.
    form.add_field("file", io.BytesIO(data), filename="doc.pdf", content_type="application/pdf")
    form.add_field("options", options)
    resp = await stack.client.post("/v1/jobs", data=form)
    assert resp.status == 202, await resp.text()
    job = await wait_done(stack, (await resp.json())["job_id"])
    assert job["status"] == "completed", job
    return job


async def get_bytes(stack: Stack, path: str) -> bytes:
    resp = await stack.client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.read()


async def test_the_same_pdf_twice_is_extracted_once(stack: Stack) -> None:
    assert stack.ctx.pool is not None
    pdf = make_pdf(["# cached words", "second page"], title="Cache")
    first = await run_job(stack, pdf, options=OPTIONS)
    started = stack.ctx.pool.started
    second = await run_job(stack, pdf, options=OPTIONS)

    assert stack.ctx.pool.started == started
    assert first["result"]["cached"] is False
    assert second["result"]["cached"] is True
    assert cache_hits(stack) == 1
    assert second["result"]["page_count"] == first["result"]["page_count"] == 2
    assert second["progress"] == {"pages_done": 2, "pages_total": 2}
    a, b = first["job_id"], second["job_id"]
    result_a = json.loads(await get_bytes(stack, f"/v1/jobs/{a}/result"))
    result_b = json.loads(await get_bytes(stack, f"/v1/jobs/{b}/result"))
    assert (result_a.pop("job_id"), result_b.pop("job_id")) == (a, b)  # each names its own job
    assert result_b == result_a
    names = [art["name"] for art in second["result"]["artifacts"]]
    assert names == [art["name"] for art in first["result"]["artifacts"]]
    assert "document.md" in names
    for art in second["result"]["artifacts"]:
        assert art["url"].endswith(f"/v1/jobs/{b}/artifacts/{art['name']}")
        body = await get_bytes(stack, f"/v1/jobs/{b}/artifacts/{art['name']}")
        assert len(body) == art["size"]
    # One entry: both results are stored under the one cache key.
    assert len(await stack.ctx.storage.list_prefixes(CACHE_PREFIX)) == 1
    assert len(await stack.ctx.storage.list_keys(CACHE_PREFIX)) == 2


async def test_other_options_and_force_refresh_extract(stack: Stack) -> None:
    assert stack.ctx.pool is not None
    pdf = make_pdf(["options matter"])
    await run_job(stack, pdf)
    started = stack.ctx.pool.started

    other = await run_job(stack, pdf, options=OPTIONS)
    assert other["result"]["cached"] is False
    assert stack.ctx.pool.started == started + 1

    refreshed = await run_job(stack, pdf, options=json.dumps({"force_refresh": True}))
    assert refreshed["result"]["cached"] is False
    assert stack.ctx.pool.started == started + 2
    # The refreshed entry points at the new job; the next identical upload copies from it.
    again = await run_job(stack, pdf)
    assert again["result"]["cached"] is True
    assert stack.ctx.pool.started == started + 2
    assert cache_hits(stack) == 1


async def test_a_deleted_result_is_a_miss(stack: Stack) -> None:
    assert stack.ctx.pool is not None
    pdf = make_pdf(["retention took it"])
    first = await run_job(stack, pdf)
    record = await stack.ctx.jobs.get(first["job_id"], "default")
    assert record.result_key is not None
    assert record.result_key.startswith(CACHE_PREFIX)
    await stack.ctx.storage.delete(job_result_key(record))
    started = stack.ctx.pool.started

    second = await run_job(stack, pdf)
    assert second["result"]["cached"] is False
    assert stack.ctx.pool.started == started + 1
    assert cache_hits(stack) == 0
    # The extraction wrote a fresh entry.
    third = await run_job(stack, pdf)
    assert third["result"]["cached"] is True
    assert stack.ctx.pool.started == started + 1


async def test_s3_sources_are_hashed_and_cached(stack: Stack) -> None:
    assert stack.ctx.pool is not None
    pdf = make_pdf(["from a bucket"])
    # An HTTP upload fills the cache; S3 sources of the same bytes (no sha256 in their record)
    # are hashed by the extract handler and answered from it.
    await run_job(stack, pdf)
    started = stack.ctx.pool.started
    for name in ("incoming/a.pdf", "incoming/b.pdf"):
        await stack.ctx.storage.put_bytes(name, pdf, "application/pdf")
        resp = await stack.client.post("/v1/jobs", json={"source": {"s3": {"key": name}}})
        assert resp.status == 202, await resp.text()
        job = await wait_done(stack, (await resp.json())["job_id"])
        assert job["status"] == "completed"
        assert job["result"]["cached"] is True
        text = json.loads(await get_bytes(stack, f"/v1/jobs/{job['job_id']}/result"))
        assert "from a bucket" in text["pages"][0]["text"]
    assert stack.ctx.pool.started == started
    assert cache_hits(stack) == 2


@pytest.mark.skipif(not CORPUS_MANUAL.exists(), reason="the corpus is not on this machine")
async def test_a_hit_is_faster_than_an_extraction(stack: Stack) -> None:
    """The figure in the README: upload to `completed` (long-poll), one corpus manual."""
    pdf = CORPUS_MANUAL.read_bytes()
    timings: dict[bool, list[float]] = {False: [], True: []}
    for i in range(4):
        # force_refresh on even rounds: an extraction each time, and a hit right after it.
        options = json.dumps(
            {"outputs": ["text", "markdown", "metadata"], "force_refresh": i % 2 == 0}
        )
        t0 = time.perf_counter()
        job = await run_job(stack, pdf, options=options)
        timings[job["result"]["cached"]].append(time.perf_counter() - t0)
    miss, hit = min(timings[False]), min(timings[True])
    print(f"\n{CORPUS_MANUAL.name}: extraction {miss:.3f} s, cache hit {hit:.3f} s")
    assert len(timings[False]) == len(timings[True]) == 2
    assert hit < miss


async def test_pages_extracted_without_text_output(stack: Stack) -> None:
    """`pages_extracted` counts processed pages, also when no per-page text is asked for."""
    pdf = make_pdf(["one", "two", "three"])
    options = json.dumps({"outputs": ["metadata"], "pages": "2-"})
    first = await run_job(stack, pdf, options)
    second = await run_job(stack, pdf, options)
    for job in (first, second):
        assert job["result"]["page_count"] == 3
        assert job["result"]["pages_extracted"] == 2
    assert second["result"]["cached"] is True


async def test_a_redelivered_job_finds_its_own_entry(stack: Stack) -> None:
    """The outcome was stored but not acked: the job's own entry answers it, without a copy
    (S3 refuses to copy an object onto itself)."""
    first = await run_job(stack, make_pdf(["redelivered"]))
    job = await stack.ctx.jobs.get(first["job_id"], "default")

    async def no_fetch() -> None:
        raise AssertionError("the source should not be fetched")

    found = await cache.lookup(stack.ctx, job, no_fetch, "/nonexistent.pdf")
    assert found.hit is not None
    assert found.hit.cached is True
    assert found.hit.page_count == 1
    assert cache_hits(stack) == 0

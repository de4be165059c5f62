"""The `blocks` and `chunks` outputs through the service: fan-out, the object drop, the door."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from handlers import object_drop, targets
from shared.adapters.broker import publish
from shared.extraction import ExtractLimits, extract_document
from shared.models import ExtractOptions
from tests.conftest import Stack, running_stack
from tests.helpers import form, upload, wait_done
from tests.integration.test_doors import minio_notification, next_body, subscribed
from tests.unit.pdfgen import figures_pdf, structured_pdf

pytestmark = pytest.mark.integration

FANOUT = {"fanout_min_pages": 8, "fanout_min_cpu_s": 0.0, "fanout_range_pages": 3}
OPTIONS = {"outputs": ["markdown", "blocks", "chunks"], "chunking": {"max_chars": 600}}
FILES = ("document.md", "document.json", "chunks.jsonl")


async def artifact(stack: Stack, job_id: str, name: str) -> bytes:
    resp = await stack.client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert resp.status == 200, name
    return await resp.read()


async def test_a_fanned_out_document_is_byte_for_byte_one_pass(
    make_settings: Any, tmp_path: Path
) -> None:
    pdf = structured_pdf(tmp_path / "ten.pdf", long_pages=5)  # 9 pages: 3 ranges of 3
    whole = tmp_path / "whole"
    whole.mkdir()
    options = ExtractOptions.model_validate(OPTIONS)
    extract_document(str(pdf), options, ExtractLimits(), str(whole), lambda d, t: None)
    async with running_stack(make_settings(**FANOUT)) as stack:
        assert stack.ctx.pool is not None
        job = await upload(stack, pdf.read_bytes(), options=json.dumps(OPTIONS))
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "completed", done
        assert stack.ctx.pool.started == 1 + 3  # the page count, then three ranges
        assert [a["name"] for a in done["result"]["artifacts"]] == list(FILES)
        for name in FILES:
            assert await artifact(stack, job["job_id"], name) == (whole / name).read_bytes()
        result = await (await stack.client.get(f"/v1/jobs/{job['job_id']}/result")).json()
        assert result["markdown"] == (whole / "document.md").read_text(encoding="utf-8")


async def test_figures_and_outline_headings_fan_out_as_one_pass(
    make_settings: Any, tmp_path: Path
) -> None:
    pdf = figures_pdf(tmp_path / "figures.pdf")  # 2 pages: 2 ranges of 1
    whole = tmp_path / "whole"
    whole.mkdir()
    options = ExtractOptions.model_validate(OPTIONS)
    extract_document(str(pdf), options, ExtractLimits(), str(whole), lambda d, t: None)
    document = json.loads((whole / "document.json").read_text(encoding="utf-8"))
    assert [b["kind"] for b in document["blocks"]].count("figure") == 2
    settings = make_settings(fanout_min_pages=1, fanout_min_cpu_s=0.0, fanout_range_pages=1)
    async with running_stack(settings) as stack:
        assert stack.ctx.pool is not None
        job = await upload(stack, pdf.read_bytes(), options=json.dumps(OPTIONS))
        done = await wait_done(stack, job["job_id"])
        assert done["status"] == "completed", done
        assert stack.ctx.pool.started == 1 + 2  # the page count, then two ranges
        for name in FILES:
            assert await artifact(stack, job["job_id"], name) == (whole / name).read_bytes()


async def test_object_drop_writes_chunks_and_blocks_to_the_outbox(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start(object_drop.serve)
    stack.start(targets.serve)
    storage = stack.ctx.storage
    key = "inbox/manual.pdf"
    body = structured_pdf(tmp_path / "s.pdf").read_bytes()
    options = {"outputs": ["blocks", "chunks"]}
    async with subscribed(stack, "job.delivered") as events:  # the outbox is the target
        await asyncio.to_thread(
            storage.client.put_object,
            stack.ctx.settings.s3_bucket,
            key,
            io.BytesIO(body),
            len(body),
            "application/pdf",
            {"pdfrelay-options": json.dumps(options)},
        )
        info = await storage.stat(key)
        note = minio_notification(stack.ctx.settings.s3_bucket, key, info.etag)
        await publish(stack.ctx.channel, stack.ctx.topology.s3_events, "", note)
        done = await next_body(events)
    assert done["status"] == "completed", done
    chunks = await storage.get_bytes("outbox/manual.pdf.chunks.jsonl")
    assert chunks == await artifact(stack, done["job_id"], "chunks.jsonl")
    document = json.loads(await storage.get_bytes("outbox/manual.pdf.document.json"))
    assert document["schema"] == "pdfrelay.document/1"
    # no markdown asked for: the result has none (document.md is an artifact for the spans)
    result = await storage.get_json("outbox/manual.pdf.json")
    assert result["markdown"] is None


@pytest.mark.parametrize(
    "chunking",
    [{"max_chars": 5}, {"max_chars": 500, "max_tokens": 100}, {"max_tokens": 100, "overlap": 90}],
)
async def test_bad_chunking_options_get_a_422(stack: Stack, chunking: dict[str, int]) -> None:
    options = json.dumps({"outputs": ["chunks"], "chunking": chunking})
    resp = await stack.client.post("/v1/jobs", data=form(b"%PDF-1.7\n", options=options))
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "INVALID_OPTIONS"
    assert "chunking" in body["error"]["message"]

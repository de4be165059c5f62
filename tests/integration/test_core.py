"""The core flow on the real broker and S3 server: upload → queue → worker → status → result."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.broker import publish
from shared.models import ExtractTask
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.helpers import form, upload, wait_done

pytestmark = pytest.mark.integration


async def test_upload_extracts_text_and_metadata(stack: Stack) -> None:
    pdf = make_pdf(["alpha bravo charlie", "delta echo foxtrot"], title="Known Title")
    accepted = await upload(stack, pdf, client_ref="ref-1")
    assert accepted["status"] == "queued"
    assert accepted["client_ref"] == "ref-1"

    job = await wait_done(stack, accepted["job_id"])
    assert job["status"] == "completed"
    assert job["result"]["page_count"] == 2
    assert job["progress"] == {"pages_done": 2, "pages_total": 2}

    resp = await stack.client.get(f"/v1/jobs/{accepted['job_id']}/result")
    result = await resp.json()
    assert result["job_id"] == accepted["job_id"]
    assert [p["number"] for p in result["pages"]] == [1, 2]
    assert "alpha bravo charlie" in result["pages"][0]["text"]
    assert "delta echo foxtrot" in result["pages"][1]["text"]
    assert result["metadata"]["title"] == "Known Title"
    assert result["metadata"]["page_count"] == 2


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"<html><body>not a pdf</body></html>" * 50, 415, "NOT_A_PDF"),
        (b"", 400, "EMPTY_FILE"),
        (b"%PDF-1.7\n" + b"0" * 5000, 413, "FILE_TOO_LARGE"),
    ],
    ids=["not-a-pdf", "empty", "too-large"],
)
async def test_bad_uploads_get_a_clear_4xx(
    make_settings: Any, data: bytes, status: int, code: str
) -> None:
    async with running_stack(make_settings(max_file_bytes=4096), extract_running=False) as stack:
        resp = await stack.client.post("/v1/jobs", data=form(data))
        assert resp.status == status
        body = await resp.json()
        assert body["error"]["code"] == code
        assert body["error"]["message"]
        assert "Traceback" not in await resp.text()
        # Nothing was stored or queued for a refused upload.
        assert await stack.ctx.storage.list_keys("uploads/") == []


async def test_invalid_options_and_media_type(stack: Stack) -> None:
    pdf = make_pdf(["x"])
    resp = await stack.client.post("/v1/jobs", data=form(pdf, options='{"outputs": ["nope"]}'))
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "INVALID_OPTIONS"
    resp = await stack.client.post("/v1/jobs", data=form(pdf, options="{not json"))
    assert (await resp.json())["error"]["code"] == "INVALID_OPTIONS"
    resp = await stack.client.post("/v1/jobs", data=b"raw", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await stack.client.get("/v1/jobs/" + "0" * 32)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "NOT_FOUND"
    resp = await stack.client.get("/v1/jobs/../../etc/passwd")
    assert resp.status == 404


async def test_idempotency_key_returns_the_same_job(stack: Stack) -> None:
    pdf = make_pdf(["same"])
    first, second = await asyncio.gather(
        upload(stack, pdf, headers={"Idempotency-Key": "k-1"}),
        upload(stack, pdf, headers={"Idempotency-Key": "k-1"}),
    )
    third = await upload(stack, pdf, headers={"Idempotency-Key": "k-1"})
    other = await upload(stack, pdf, headers={"Idempotency-Key": "k-2"})
    assert first["job_id"] == second["job_id"] == third["job_id"]
    assert other["job_id"] != first["job_id"]
    assert len(await stack.ctx.storage.list_keys("uploads/")) == 2


async def test_json_submission_with_s3_source(stack: Stack) -> None:
    await stack.ctx.storage.put_bytes("incoming/a.pdf", make_pdf(["from s3"]), "application/pdf")
    resp = await stack.client.post(
        "/v1/jobs", json={"source": {"s3": {"key": "incoming/a.pdf"}}, "client_ref": "c"}
    )
    assert resp.status == 202, await resp.text()
    job = await wait_done(stack, (await resp.json())["job_id"])
    assert job["status"] == "completed"

    resp = await stack.client.post("/v1/jobs", json={"source": {"s3": {"key": "missing.pdf"}}})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "SOURCE_UNREACHABLE"
    resp = await stack.client.post("/v1/jobs", json={"source": {}})
    assert resp.status == 400


async def test_api_keys_scope_jobs_to_their_tenant(make_settings: Any) -> None:
    settings = make_settings(api_keys="acme:key-a,globex:key-b")
    async with running_stack(settings) as stack:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        resp = await stack.client.post("/v1/jobs", data=form(make_pdf(["t"])))
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "UNAUTHORIZED"
        job = await upload(stack, make_pdf(["tenant a"]), headers=a)
        await wait_done(stack, job["job_id"], headers=a)
        for path in ("", "/result"):
            resp = await stack.client.get(f"/v1/jobs/{job['job_id']}{path}", headers=b)
            assert resp.status == 404
            resp = await stack.client.get(f"/v1/jobs/{job['job_id']}{path}")
            assert resp.status == 401
        # The same idempotency key in two tenants makes two jobs.
        ja = await upload(stack, make_pdf(["k"]), headers={**a, "Idempotency-Key": "x"})
        jb = await upload(stack, make_pdf(["k"]), headers={**b, "Idempotency-Key": "x"})
        assert ja["job_id"] != jb["job_id"]


async def test_full_queue_answers_503_with_retry_after(make_settings: Any) -> None:
    async with running_stack(make_settings(max_queue_length=2), extract_running=False) as stack:
        pdf = make_pdf(["q"])
        for _ in range(2):
            await upload(stack, pdf)
        resp = await stack.client.post("/v1/jobs", data=form(pdf))
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert (await resp.json())["error"]["code"] == "QUEUE_FULL"
        # The refused job left no record behind.
        assert len(await stack.ctx.storage.list_keys("index/")) == 2
        # Once the workers drain the queue, uploads are accepted again.
        stack.start_extract()
        job = await upload_when_accepted(stack, pdf)
        assert (await wait_done(stack, job["job_id"]))["status"] == "completed"


async def upload_when_accepted(stack: Stack, pdf: bytes) -> Any:
    async with asyncio.timeout(30):
        while True:
            resp = await stack.client.post("/v1/jobs", data=form(pdf))
            if resp.status == 202:
                return await resp.json()
            assert resp.status == 503
            # Wait for the next job to finish rather than polling blindly.
            await _next_terminal_event(stack)


async def _next_terminal_event(stack: Stack) -> None:
    channel = await stack.ctx.connection.channel()
    try:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(stack.ctx.topology.events, "job.completed")
        async with queue.iterator(timeout=10) as it:
            async for _ in it:
                return
    except TimeoutError:
        return
    finally:
        await channel.close()


async def test_redelivered_task_of_a_finished_job_is_not_redone(stack: Stack) -> None:
    job = await upload(stack, make_pdf(["once"]))
    await wait_done(stack, job["job_id"])
    assert stack.ctx.pool is not None
    started = stack.ctx.pool.started

    channel = await stack.ctx.connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(stack.ctx.topology.events, "job.completed")
    await publish(
        stack.ctx.channel,
        stack.ctx.topology.tasks,
        stack.ctx.topology.TASK_KEY,
        ExtractTask(job_id=job["job_id"]),
    )
    message = await queue.get(timeout=10, fail=False) or await _get_within(queue)
    assert message is not None
    assert json.loads(message.body)["job_id"] == job["job_id"]
    assert message.message_id == f"msg_{job['job_id']}_job_completed"
    assert stack.ctx.pool.started == started
    await channel.close()


async def _get_within(queue: Any) -> Any:
    async with queue.iterator(timeout=10) as it:
        async for message in it:
            await message.ack()
            return message
    return None


@pytest.mark.timeout(300)
async def test_hundred_concurrent_uploads_bounded_workers(
    make_settings: Any, tmp_path: Path
) -> None:
    """The seed's scenario: 100 uploads at once, a bounded number extracted at a time."""
    trace = tmp_path / "trace"
    trace.mkdir()
    settings = make_settings(extract_workers=2, extract_trace_dir=str(trace))
    async with running_stack(settings) as stack:
        pdfs = [make_pdf([f"document number {i} word{i}x"]) for i in range(100)]
        accepted = await asyncio.gather(*(upload(stack, pdf) for pdf in pdfs))
        assert len({a["job_id"] for a in accepted}) == 100

        jobs = await asyncio.gather(*(wait_done(stack, a["job_id"]) for a in accepted))
        assert all(j["status"] == "completed" for j in jobs)
        for i, a in enumerate(accepted):
            resp = await stack.client.get(f"/v1/jobs/{a['job_id']}/result")
            assert f"word{i}x" in (await resp.json())["pages"][0]["text"]

    spans = [json.loads(line) for f in trace.iterdir() for line in f.read_text().splitlines()]
    assert len(spans) == 100
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert 1 <= peak <= 2

"""A client written against the Secretary's documented behaviour, on the real broker and S3."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from shared.webhooks.signing import generate_secret
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.integration.test_webhooks import StateWatch

pytestmark = pytest.mark.integration

SECRET = generate_secret()
KEY = "key-acme"
OTHER_KEY = "key-other"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKEN = "cb-token-7f3a"
PAGES = ["erste Seite alpha", "zweite Seite bravo Übung", "dritte Seite charlie"]


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """The seed client's side: its callback endpoint, and a PDF it serves for process-url."""

    url: str = ""
    pdf_url: str = ""
    calls: list[Call] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def callback(self, request: web.Request) -> web.Response:
        self.calls.append(Call(dict(request.headers), await request.read()))
        async with self.changed:
            self.changed.notify_all()
        return web.json_response({"status": "ok"})

    async def wait_calls(self, n: int, within: float = 30) -> list[Call]:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: len(self.calls) >= n)
        return self.calls


@asynccontextmanager
async def seed_client() -> AsyncIterator[Client]:
    client = Client()
    pdf = make_pdf(PAGES)

    async def serve_pdf(request: web.Request) -> web.Response:
        return web.Response(body=pdf, content_type="application/pdf")

    app = web.Application()
    app.router.add_post("/callback", client.callback)
    app.router.add_get("/doc.pdf", serve_pdf)
    async with TestServer(app, host="127.0.0.1") as server:
        client.url = str(server.make_url("/callback"))
        client.pdf_url = str(server.make_url("/doc.pdf"))
        yield client


@pytest.fixture
async def seed_stack(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Stack, StateWatch]]:
    settings = make_settings(
        api_keys=f"acme:{KEY},other:{OTHER_KEY}",
        webhook_secret=SECRET,
        webhook_retry_schedule="100ms,200ms",
        webhook_allowed_networks="127.0.0.0/8",
    )
    async with running_stack(settings) as stack:
        delivered = StateWatch(stack, monkeypatch)
        stack.start_webhooks()
        yield stack, delivered


def seed_form(pdf: bytes | None, **fields: str) -> aiohttp.FormData:
    fd = aiohttp.FormData()
    if pdf is not None:
        fd.add_field("file", pdf, filename="bericht.pdf", content_type="application/pdf")
    for key, value in fields.items():
        fd.add_field(key, value)
    return fd


async def process(stack: Stack, pdf: bytes, expect: int = 202, **fields: str) -> Any:
    resp = await stack.client.post("/api/pdf/process", data=seed_form(pdf, **fields), headers=AUTH)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def test_upload_with_callback_gets_the_completed_payload(
    seed_stack: tuple[Stack, StateWatch],
) -> None:
    stack, delivered = seed_stack
    job_ref = "kunde-42/../../jobs/x"  # the client's own id; never a storage path
    pdf = make_pdf(PAGES)
    async with seed_client() as client:
        ack = await process(
            stack,
            pdf,
            callback_url=client.url,
            callback_token=TOKEN,
            jobId=job_ref,
        )
        assert ack["status"] == "accepted"
        assert ack["worker"] == "secretary"
        assert ack["job"] == {"id": job_ref}
        assert ack["webhook"] == {"delivered_to": client.url}
        assert ack["error"] is None
        process_id = ack["process"]["id"]
        assert ack["process"]["main_processor"] == "pdf"
        assert ack["process"]["started"]

        [call] = await client.wait_calls(1)
        await delivered.wait(process_id, "delivered", within=30)
        # The same jobId again is the same job, not a second one (and no second webhook).
        again = await process(stack, pdf, jobId=job_ref)
        assert again["process"]["id"] == process_id
        # ... and the same jobId for another file is refused (issue 14), in the seed's shape.
        other = await process(stack, make_pdf(["other"]), expect=409, jobId=job_ref)
        assert other["error"]["code"] == "IDEMPOTENCY_MISMATCH"

    assert len(client.calls) == 1
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.headers["X-Callback-Token"] == TOKEN
    Webhook(SECRET).verify(call.body, call.headers)  # signed like every pdfrelay webhook
    body = call.payload
    assert body["status"] == "completed"
    assert body["worker"] == "secretary"
    assert body["jobId"] == job_ref
    assert body["error"] is None
    proc = body["process"]
    assert proc["id"] == process_id
    assert proc["main_processor"] == "pdf"
    assert proc["started"] == ack["process"]["started"]
    assert proc["completed"] >= proc["started"]
    assert proc["duration_ms"] >= 0
    data = body["data"]
    for text in PAGES:
        assert text in data["extracted_text"]
    assert "--- Seite 2 ---" in data["extracted_text"]
    contents = data["metadata"]["text_contents"]
    assert [c["page"] for c in contents] == [1, 2, 3]
    assert "bravo Übung" in contents[1]["content"]  # UTF-8 body, still signed right
    assert data["metadata"]["page_count"] == 3
    assert data["metadata"]["file_name"] == "bericht.pdf"
    assert data["metadata"]["extraction_method"] == "native"
    assert "images_archive_url" not in data

    # GET /api/jobs/{id}, by the client's id and by pdfrelay's: the envelope, no token.
    for ident in (quote(job_ref, safe=""), process_id):
        resp = await stack.client.get(f"/api/jobs/{ident}", headers=AUTH)
        assert resp.status == 200
        raw = await resp.text()
        assert TOKEN not in raw
        got = json.loads(raw)
        assert got["status"] == "success"
        assert got["data"]["job_id"] == job_ref
        assert got["data"]["pdfrelay_job_id"] == process_id
        assert got["data"]["status"] == "completed"
        assert "alpha" in got["data"]["results"]["extracted_text"]
        assert got["data"]["webhook"]["state"] == "delivered"
    # Another tenant does not see it, by either id.
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    resp = await stack.client.get(f"/api/jobs/{process_id}", headers=other)
    assert resp.status == 404
    assert (await resp.json())["status"] == "error"
    resp = await stack.client.get(f"/api/jobs/{quote(job_ref, safe='')}", headers=other)
    assert resp.status == 404
    # Same auth as /v1.
    resp = await stack.client.post("/api/pdf/process", data=seed_form(make_pdf(["x"])))
    assert resp.status == 401


async def test_a_damaged_file_sends_the_error_payload(seed_stack: tuple[Stack, StateWatch]) -> None:
    stack, delivered = seed_stack
    damaged = b"%PDF-1.7\n" + b"\x00garbage that is no PDF structure\n" * 200
    async with seed_client() as client:
        ack = await process(
            stack, damaged, callback_url=client.url, callback_token=TOKEN, jobId="bad-1"
        )
        [call] = await client.wait_calls(1)
        await delivered.wait(ack["process"]["id"], "delivered", within=30)
    assert len(client.calls) == 1
    assert call.headers["X-Callback-Token"] == TOKEN
    body = call.payload
    assert body["status"] == "error"
    assert body["worker"] == "secretary"
    assert body["jobId"] == "bad-1"
    assert body["data"] is None
    assert body["process"]["id"] == ack["process"]["id"]
    assert body["process"]["main_processor"] == "pdf"
    assert body["error"]["code"] in ("PDF_DAMAGED", "NOT_A_PDF")
    assert body["error"]["message"]

    # wait_ms sees it fail: the error document inline, with the Secretary's 400.
    inline = await process(stack, damaged, expect=400, wait_ms="60000")
    assert inline["status"] == "error"
    assert inline["error"]["code"] == body["error"]["code"]

    # Not a PDF at all: refused at once, in the seed's error shape.
    resp = await stack.client.post(
        "/api/pdf/process", data=seed_form(b"<html>nope</html>" * 100), headers=AUTH
    )
    assert resp.status == 415
    err = await resp.json()
    assert err["status"] == "error"
    assert err["error"]["code"] == "NOT_A_PDF"


async def test_page_range_and_wait_ms_answer_inline(seed_stack: tuple[Stack, StateWatch]) -> None:
    stack, _ = seed_stack
    body = await process(
        stack, make_pdf(PAGES), expect=200, page_start="2", page_end="3", wait_ms="60000"
    )
    assert body["status"] == "completed"
    text = body["data"]["extracted_text"]
    assert "bravo" in text
    assert "charlie" in text
    assert "alpha" not in text
    assert [c["page"] for c in body["data"]["metadata"]["text_contents"]] == [2, 3]
    assert body["jobId"] == body["process"]["id"]  # no jobId given: pdfrelay's id

    only_first = await process(stack, make_pdf(PAGES), expect=200, page_end="1", wait_ms="60000")
    assert "alpha" in only_first["data"]["extracted_text"]
    assert "bravo" not in only_first["data"]["extracted_text"]

    bad = await process(stack, make_pdf(PAGES), expect=422, page_start="3", page_end="2")
    assert bad["error"]["code"] == "INVALID_OPTIONS"


async def test_process_url_with_images_archive(seed_stack: tuple[Stack, StateWatch]) -> None:
    stack, _ = seed_stack
    async with seed_client() as client:
        resp = await stack.client.post(
            "/api/pdf/process-url",
            data={"url": client.pdf_url, "includeImages": "true", "wait_ms": "60000"},
            headers=AUTH,
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert "charlie" in body["data"]["extracted_text"]
    assert body["data"]["metadata"]["file_name"] == "doc.pdf"
    archive_url = body["data"]["images_archive_url"]
    assert archive_url.endswith(f"/api/jobs/{body['process']['id']}/download-archive")
    resp = await stack.client.get(
        f"/api/jobs/{body['process']['id']}/download-archive", headers=AUTH
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as zf:
        assert zf.testzip() is None


async def test_without_wait_the_ack_comes_at_once(seed_stack: tuple[Stack, StateWatch]) -> None:
    stack, _ = seed_stack
    # No extract handler would be needed for this answer: it only says the job is queued.
    ack = await process(stack, make_pdf(PAGES), jobId="quick-1", extraction_method="preview")
    assert ack["status"] == "accepted"
    assert ack["webhook"] is None
    resp = await stack.client.get(f"/v1/jobs/{ack['process']['id']}", headers=AUTH)
    job = await resp.json()
    assert job["door"] == "seed"
    assert job["client_ref"] == "quick-1"
    assert "page_images" in job["options"]["outputs"]
    assert "text" not in job["options"]["outputs"]
    assert job["options"]["ocr"] == "never"

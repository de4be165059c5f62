"""The Secretary's LLM methods: a vision model behind any OpenAI-compatible endpoint, faked
here by a local aiohttp server that checks each request's shape and answers on command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from handlers import llm, requests
from shared.extraction.ocr import find_tessdata
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.helpers import form, upload, wait_done
from tests.integration.test_doors import request_message

pytestmark = pytest.mark.integration

KEY = "sk-test-9c1f7e2ab44d0d5e"
MODEL = "vision-test-1"
PROMPT = "Transcribe the page into Markdown."
BASE_WIDTH = 200
"""Page n of a test document is BASE_WIDTH + n points wide: rendered at 72 dpi, its image is
as many pixels wide, which is how the fake model tells the pages apart."""


def numbered_pdf(pages: int, salt: str = "") -> bytes:
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=BASE_WIDTH + n, height=300)
        page.insert_text((20, 40), f"native text of page {n} {salt}", fontsize=11)
    data: bytes = doc.tobytes()
    doc.close()
    return data


def png_width(png: bytes) -> int:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "the image is not a PNG"
    width: int = struct.unpack(">I", png[16:20])[0]
    return width


@dataclass
class FakeModel:
    """An OpenAI-compatible chat-completions endpoint that checks what it is sent."""

    mode: str = "ok"
    """ok, 500 (always fails) or 400 (refuses)."""
    rate_limited: int = 0
    """Answer this many requests first with 429 and `Retry-After: retry_after`."""
    retry_after: str = "1"
    crowd: int = 1
    """An answer waits (2 s at most) until this many calls are in flight at once."""
    calls: list[float] = field(default_factory=list)
    texts: list[list[dict[str, str]]] = field(default_factory=list)
    """The messages of each text (template) request."""
    limited_at: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    """When set up, an answer waits for it (after `arrived` is set)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    _crowded: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            if isinstance(body["messages"][-1]["content"], str):
                return self._text(request, body)
            png = self._check(request, body)
            if self.rate_limited > 0:
                self.rate_limited -= 1
                self.limited_at.append(time.monotonic())
                return web.json_response(
                    {"error": {"message": "slow down"}},
                    status=429,
                    headers={"Retry-After": self.retry_after},
                )
            if self.mode == "500":
                return web.json_response({"error": {"message": "overloaded"}}, status=500)
            if self.mode == "400":
                return web.json_response({"error": {"message": "image rejected"}}, status=400)
            if self.mode == "401":
                masked = f"Incorrect API key provided: {KEY[:8]}********{KEY[-4:]}."
                return web.json_response({"error": {"message": masked}}, status=401)
            self.arrived.set()
            if self.gate is not None:
                await asyncio.wait_for(self.gate.wait(), 30)
            if self.in_flight >= self.crowd:
                self._crowded.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._crowded.wait(), 2)
            page = png_width(png) - BASE_WIDTH
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"# Page {page}\n"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 700, "completion_tokens": 9},
                }
            )
        finally:
            self.in_flight -= 1

    def _text(self, request: web.Request, body: Any) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}" or body["model"] != MODEL:
            self.problems.append("a text request without the key or the model")
        self.texts.append(body["messages"])
        user = body["messages"][-1]["content"]
        return web.json_response(
            {
                "choices": [
                    {
                        "message": {"content": f"SUMMARY of {len(user)} chars"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5},
            }
        )

    def _check(self, request: web.Request, body: Any) -> bytes:
        def expect(ok: bool, what: str) -> None:
            if not ok:
                self.problems.append(what)

        expect(request.path == "/v1/chat/completions", f"path {request.path}")
        expect(request.headers.get("Authorization") == f"Bearer {KEY}", "the bearer key")
        expect(body.get("model") == MODEL, "the model")
        content = body["messages"][0]["content"]
        texts = [c["text"] for c in content if c["type"] == "text"]
        expect(texts == [PROMPT], "the prompt")
        urls = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
        expect(len(urls) == 1, "one image")
        prefix = "data:image/png;base64,"
        expect(urls[0].startswith(prefix), "a base64 PNG data URL")
        return base64.b64decode(urls[0].removeprefix(prefix))


@contextlib.asynccontextmanager
async def fake_model(fake: FakeModel) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/v1"))


def llm_settings(make_settings: Any, url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "llm_base_url": url,
        "llm_api_key": KEY,
        "llm_model": MODEL,
        "llm_prompt": PROMPT,
        "llm_concurrency": 2,
        "llm_dpi": 72,
        "llm_retry_budget": 2,
        "transient_backoff_s": 0.2,
    }
    values.update(overrides)
    return make_settings(**values)


async def submit(stack: Stack, pdf: bytes, method: str = "llm") -> Any:
    job = await upload(stack, pdf, options=json.dumps({"method": method}))
    return await wait_done(stack, job["job_id"])


async def result_of(stack: Stack, job_id: str) -> Any:
    resp = await stack.client.get(f"/v1/jobs/{job_id}/result")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def assert_no_key_stored(stack: Stack) -> None:
    for key in await stack.ctx.storage.list_keys(""):
        assert KEY.encode() not in await stack.ctx.storage.get_bytes(key), key


async def test_six_pages_in_parallel_in_order_and_a_repeat_costs_no_call(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeModel(crowd=2)
    async with fake_model(fake) as url, running_stack(llm_settings(make_settings, url)) as stack:
        stack.start(llm.serve)
        pdf = numbered_pdf(6)
        job = await submit(stack, pdf)
        assert job["status"] == "completed", job
        assert job["progress"] == {"pages_done": 6, "pages_total": 6}
        result = await result_of(stack, job["job_id"])
        assert [p["number"] for p in result["pages"]] == [1, 2, 3, 4, 5, 6]
        assert [p["text"] for p in result["pages"]] == [f"# Page {n}\n" for n in range(1, 7)]
        assert [p["llm"] for p in result["pages"]] == [f"# Page {n}\n" for n in range(1, 7)]
        assert fake.problems == []
        assert len(fake.calls) == 6
        assert fake.max_in_flight == 2  # in parallel, never more than PDFRELAY_LLM_CONCURRENCY
        usage = {"calls": 6, "cached_pages": 0, "tokens_in": 6 * 700, "tokens_out": 6 * 9}
        assert job["llm"] == usage
        sample = stack.ctx.metrics.registry.get_sample_value
        assert sample("pdfrelay_llm_tokens_total", {"direction": "in"}) == 6 * 700
        assert sample("pdfrelay_llm_calls_total", {"outcome": "ok"}) == 6

        again = await submit(stack, pdf)
        assert again["status"] == "completed", again
        assert len(fake.calls) == 6  # every page from the cache: no second call
        assert again["llm"] == {"calls": 0, "cached_pages": 6, "tokens_in": 0, "tokens_out": 0}
        assert (await result_of(stack, again["job_id"]))["pages"] == result["pages"]

        both = await submit(stack, pdf, "llm_and_native")
        assert both["status"] == "completed", both
        pages = (await result_of(stack, both["job_id"]))["pages"]
        assert [p["text"].strip() for p in pages] == [
            f"native text of page {n}" for n in range(1, 7)
        ]
        assert [p["llm"] for p in pages] == [f"# Page {n}\n" for n in range(1, 7)]
        assert len(fake.calls) == 6

        for answer in (job, again, both, result):
            assert KEY not in json.dumps(answer)
        await assert_no_key_stored(stack)
    assert KEY not in caplog.text


async def test_the_seed_door_answers_in_the_secretarys_combined_shape(make_settings: Any) -> None:
    fake = FakeModel()
    async with fake_model(fake) as url, running_stack(llm_settings(make_settings, url)) as stack:
        stack.start(llm.serve)
        pdf = numbered_pdf(2)
        fields = {"extraction_method": "llm_and_native", "wait_ms": "60000"}
        resp = await stack.client.post("/api/pdf/process", data=form(pdf, **fields))
        assert resp.status == 200, await resp.text()
        done = await resp.json()
        assert done["status"] == "completed"
        data = done["data"]
        assert data["metadata"]["extraction_method"] == "llm_and_native"
        contents = [
            f"=== Native Text ===\nnative text of page {n} \n\n\n=== LLM Markdown ===\n# Page {n}\n"
            for n in (1, 2)
        ]
        assert data["metadata"]["text_contents"] == [
            {"page": n, "content": c} for n, c in zip((1, 2), contents, strict=True)
        ]
        assert data["extracted_text"] == "".join(
            f"\n--- Seite {n} ---\n{c}" for n, c in zip((1, 2), contents, strict=True)
        )
        fields = {"extraction_method": "llm", "wait_ms": "60000"}
        resp = await stack.client.post("/api/pdf/process", data=form(pdf, **fields))
        assert resp.status == 200, await resp.text()
        data = (await resp.json())["data"]
        assert data["metadata"]["extraction_method"] == "llm"
        assert (
            data["extracted_text"] == "\n--- Seite 1 ---\n# Page 1\n\n--- Seite 2 ---\n# Page 2\n"
        )
        assert len(fake.calls) == 2  # the second job's pages came from the cache

        if find_tessdata(None) is None:
            return  # no Tesseract here: llm_and_ocr is refused (OCR_UNAVAILABLE)
        fields = {"extraction_method": "llm_and_ocr", "wait_ms": "60000"}
        resp = await stack.client.post("/api/pdf/process", data=form(pdf, **fields))
        assert resp.status == 200, await resp.text()
        contents = (await resp.json())["data"]["metadata"]["text_contents"]
        for n, page in zip((1, 2), contents, strict=True):
            head = f"=== LLM Markdown ===\n# Page {n}\n\n\n=== Tesseract OCR ===\n"
            assert page["content"].startswith(head), page
        job = await submit(stack, pdf, "llm_and_ocr")  # /v1: two fields
        pages = (await result_of(stack, job["job_id"]))["pages"]
        assert [(p["ocr"], p["llm"]) for p in pages] == [(True, "# Page 1\n"), (True, "# Page 2\n")]


async def test_a_spent_tenant_budget_refuses_new_llm_jobs(make_settings: Any) -> None:
    fake = FakeModel()
    async with fake_model(fake) as url:
        settings = llm_settings(make_settings, url, llm_tenant_monthly_tokens=1000)
        async with running_stack(settings) as stack:
            stack.start(llm.serve)
            for salt in ("a", "b"):  # 709 tokens each: under the budget when accepted
                job = await submit(stack, numbered_pdf(1, salt=salt))
                assert job["status"] == "completed", job
            resp = await stack.client.post(
                "/v1/jobs",
                data=form(numbered_pdf(1, salt="c"), options=json.dumps({"method": "llm"})),
            )
            assert resp.status == 429, await resp.text()
            error = (await resp.json())["error"]
            assert error["code"] == "LLM_BUDGET_EXCEEDED"
            assert "PDFRELAY_LLM_TENANT_MONTHLY_TOKENS" in error["message"]
            # Other methods are not budgeted.
            native = await upload(stack, numbered_pdf(1, salt="c"))
            assert (await wait_done(stack, native["job_id"]))["status"] == "completed"


async def test_a_template_transforms_the_document_into_transformed_md(
    make_settings: Any, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "Besprechung.md").write_text("Fasse die Besprechung {{title}} zusammen.\n{{text}}")
    (templates / "Notiz.md").write_text("Schreibe eine Notiz für {{who}}.")
    fake = FakeModel()
    async with fake_model(fake) as url:
        settings = llm_settings(make_settings, url, llm_templates_dir=str(templates))
        async with running_stack(settings) as stack:
            stack.start(llm.serve)
            pdf = numbered_pdf(2)
            options = {"method": "llm", "template": "Besprechung", "context": {"title": "Q3"}}
            accepted = await upload(stack, pdf, options=json.dumps(options))
            job = await wait_done(stack, accepted["job_id"])
            assert job["status"] == "completed", job
            text = "\n--- Seite 1 ---\n# Page 1\n\n--- Seite 2 ---\n# Page 2\n"
            user = f"Fasse die Besprechung Q3 zusammen.\n{text}"
            assert fake.texts == [[{"role": "user", "content": user}]]
            answer = f"SUMMARY of {len(user)} chars"
            assert (await result_of(stack, job["job_id"]))["transformed"] == answer
            names = [a["name"] for a in job["result"]["artifacts"]]
            assert "transformed.md" in names
            resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/artifacts/transformed.md")
            assert await resp.text() == answer
            assert job["llm"]["calls"] == 3  # two pages and the template
            assert job["llm"]["tokens_in"] == 2 * 700 + 50

            again = await wait_done(
                stack, (await upload(stack, pdf, options=json.dumps(options)))["job_id"]
            )
            assert again["llm"]["calls"] == 0  # pages and template answer from the cache
            assert len(fake.texts) == 1

            # The seed door: native text, a template without {{text}}, context as JSON text.
            fields = {
                "extraction_method": "native",
                "template": "Notiz",
                "context": json.dumps({"who": "Anna"}),
                "wait_ms": "60000",
            }
            resp = await stack.client.post("/api/pdf/process", data=form(pdf, **fields))
            assert resp.status == 200, await resp.text()
            data = (await resp.json())["data"]
            system, user_message = fake.texts[-1]
            assert system == {"role": "system", "content": "Schreibe eine Notiz für Anna."}
            assert "native text of page 2" in user_message["content"]
            assert data["transformed_text"] == f"SUMMARY of {len(user_message['content'])} chars"
            assert "native text of page 1" in data["extracted_text"]

            for name in ("Protokoll", "../Besprechung"):
                refused = form(pdf, options=json.dumps({"template": name}))
                resp = await stack.client.post("/v1/jobs", data=refused)
                assert resp.status == 422, await resp.text()
                assert (await resp.json())["error"]["code"] == "INVALID_OPTIONS"
    async with running_stack(make_settings(), extract_running=False) as stack:
        resp = await stack.client.post(
            "/v1/jobs", data=form(pdf, options=json.dumps({"template": "Besprechung"}))
        )
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "LLM_NOT_CONFIGURED"


async def test_the_broker_door_takes_the_llm_methods(make_settings: Any) -> None:
    fake = FakeModel()
    async with fake_model(fake) as url, running_stack(llm_settings(make_settings, url)) as stack:
        stack.start(llm.serve)
        stack.start(requests.serve)
        await stack.ctx.storage.put_bytes("shared/in.pdf", numbered_pdf(2))
        channel = await stack.ctx.connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        request = {
            "schema": "pdfrelay.extract-request/1",
            "source": {"s3": {"key": "shared/in.pdf"}},
            "options": {"method": "llm_and_native"},
        }
        await request_message(stack, request, message_id="llm-1", reply_to=replies.name)
        async with replies.iterator(timeout=60) as it:
            async for message in it:
                await message.ack()
                body = json.loads(message.body)
                break
        assert body["type"] == "job.completed", body
        assert body["data"]["llm"]["calls"] == 2
        pages = (await result_of(stack, body["data"]["job_id"]))["pages"]
        assert [p["llm"] for p in pages] == ["# Page 1\n", "# Page 2\n"]
        await channel.close()


async def test_a_429_storm_pauses_the_consumer_and_nothing_fails(make_settings: Any) -> None:
    fake = FakeModel(rate_limited=3, retry_after="2")
    async with fake_model(fake) as url, running_stack(llm_settings(make_settings, url)) as stack:
        stack.start(llm.serve)
        job = await submit(stack, numbered_pdf(3))
        assert job["status"] == "completed", job
        pages = (await result_of(stack, job["job_id"]))["pages"]
        assert [p["text"] for p in pages] == [f"# Page {n}\n" for n in (1, 2, 3)]
        assert len(fake.limited_at) == 3
        assert len(fake.calls) == 3 + 3
        # After a 429 no call of any page starts until its Retry-After is over (a call already
        # on its way when the 429 was answered excepted: hence the margin).
        for limited in fake.limited_at:
            assert not [t for t in fake.calls if limited + 0.5 < t < limited + 1.9]
        assert fake.calls[-1] - fake.limited_at[0] >= 1.9  # and it slowed the job down


async def test_a_failing_provider_fails_the_job_with_a_clear_code_and_no_text(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeModel(mode="500")
    async with fake_model(fake) as url, running_stack(llm_settings(make_settings, url)) as stack:
        stack.start(llm.serve)
        job = await submit(stack, numbered_pdf(1))
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "LLM_UNAVAILABLE"
        assert "page 1 after 3 tries" in job["error"]["message"]
        assert len(fake.calls) == 3  # the first call and PDFRELAY_LLM_RETRY_BUDGET more
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/result")
        assert resp.status == 404

        fake.mode = "400"
        refused = await submit(stack, numbered_pdf(2, salt="other"))
        assert refused["status"] == "failed", refused
        assert refused["error"]["code"] == "LLM_REFUSED"
        assert "image rejected" in refused["error"]["message"]

        fake.mode = "401"
        unkeyed = await submit(stack, numbered_pdf(1, salt="third"))
        assert unkeyed["status"] == "failed", unkeyed
        assert unkeyed["error"]["code"] == "LLM_UNAVAILABLE"
        assert "PDFRELAY_LLM_API_KEY" in unkeyed["error"]["message"]
        assert KEY[-4:] not in json.dumps(unkeyed)  # not even the provider's masked form
        assert KEY not in json.dumps([job, refused])
        await assert_no_key_stored(stack)
    assert KEY not in caplog.text


async def test_model_calls_hold_no_extraction_worker(make_settings: Any) -> None:
    gate = asyncio.Event()
    fake = FakeModel(gate=gate)
    async with fake_model(fake) as url:
        settings = llm_settings(make_settings, url, extract_workers=1)
        async with running_stack(settings) as stack:
            stack.start(llm.serve)
            job = await upload(stack, numbered_pdf(2), options=json.dumps({"method": "llm"}))
            await asyncio.wait_for(fake.arrived.wait(), 60)
            # The only worker is free while the model holds the call: another job runs.
            native = await upload(stack, make_pdf(["while the model thinks"]))
            assert (await wait_done(stack, native["job_id"]))["status"] == "completed"
            state = await (await stack.client.get(f"/v1/jobs/{job['job_id']}")).json()
            assert state["status"] == "processing"
            gate.set()
            assert (await wait_done(stack, job["job_id"]))["status"] == "completed"


async def test_a_cancel_stops_the_pages_not_yet_sent(make_settings: Any) -> None:
    gate = asyncio.Event()
    fake = FakeModel(gate=gate)
    async with fake_model(fake) as url:
        settings = llm_settings(make_settings, url, llm_concurrency=1)
        async with running_stack(settings) as stack:
            stack.start(llm.serve)
            job = await upload(stack, numbered_pdf(4), options=json.dumps({"method": "llm"}))
            await asyncio.wait_for(fake.arrived.wait(), 60)
            # The call in flight is stopped (the fake holds it), the job ends while DELETE waits.
            resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "cancelled"
            gate.set()
            assert len(fake.calls) == 1  # the page in flight; none of the three after it


async def test_without_an_endpoint_the_llm_methods_name_the_setting(make_settings: Any) -> None:
    async with running_stack(make_settings(), extract_running=False) as stack:
        pdf = make_pdf(["one"])
        for method in ("llm", "llm_and_native", "llm_and_ocr"):
            options = json.dumps({"method": method})
            resp = await stack.client.post("/v1/jobs", data=form(pdf, options=options))
            assert resp.status == 422, await resp.text()
            error = (await resp.json())["error"]
            assert error["code"] == "LLM_NOT_CONFIGURED"
            assert "PDFRELAY_LLM_BASE_URL" in error["message"]
        resp = await stack.client.post(
            "/v1/jobs", data=form(pdf, options=json.dumps({"outputs": ["llm"]}))
        )
        assert resp.status == 422
        seed = form(pdf, extraction_method="llm")
        resp = await stack.client.post("/api/pdf/process", data=seed)
        assert resp.status == 422
        body = await resp.json()
        assert body["status"] == "error"
        assert body["error"]["code"] == "LLM_NOT_CONFIGURED"
        assert "PDFRELAY_LLM_BASE_URL" in body["error"]["message"]

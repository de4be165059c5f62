"""The Python client against the real service (broker, S3 server, handlers), and the README's
client examples run as they are written."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from handlers import batches as batch_handler
from pdfrelay_client import (
    AsyncClient,
    ErrorCode,
    InvalidInput,
    Job,
    JobFailed,
    NotFound,
    ServerError,
    Unauthorized,
    WaitTimeout,
)
from pdfrelay_client.aio import AsyncClient as AsyncClientImpl
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.integration.test_webhooks import SECRET, hook_stack, receiver, status

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 60


def base_url(stack: Stack) -> str:
    return str(stack.client.make_url("")).rstrip("/")


async def test_submit_follow_and_fetch(stack: Stack, tmp_path: Path) -> None:
    pdf = tmp_path / "two.pdf"
    pdf.write_bytes(make_pdf(["first page", "second page"], title="Two"))
    async with AsyncClient(base_url(stack)) as client:
        job = await client.submit(pdf, {"outputs": ["text", "markdown"]}, client_ref="ref-1")
        assert (job.status, job.client_ref) == ("queued", "ref-1")
        seen: list[Job] = []
        done = await client.wait(job, timeout=TIMEOUT_S, on_update=seen.append)
        assert done.status == "completed"
        assert seen[-1] is done
        assert "document.md" in [a.name for a in done.artifacts]
        result = await client.result(done)
        assert [p["text"].strip() for p in result["pages"]] == ["first page", "second page"]
        markdown = await client.artifact(done, "document.md")
        assert b"second page" in markdown
        saved = await client.save_artifact(done, "document.md", tmp_path / "out.md")
        assert saved.read_bytes() == markdown
        # An ended job's stream is its terminal event alone.
        assert [j.status async for j in client.events(done)] == ["completed"]


async def test_refusals_failures_and_missing_jobs(stack: Stack) -> None:
    async with AsyncClient(base_url(stack)) as client:
        with pytest.raises(InvalidInput) as refused:
            await client.submit(b"<html>not a pdf</html>")
        assert (refused.value.status, refused.value.code) == (415, ErrorCode.NOT_A_PDF)
        with pytest.raises(InvalidInput) as bad_options:
            await client.submit(make_pdf(["x"]), {"outputs": ["nonsense"]})
        assert bad_options.value.code == ErrorCode.INVALID_OPTIONS
        with pytest.raises(NotFound):
            await client.get("0" * 32)

        job = await client.submit(b"%PDF-1.7\nthis is no document at all\n%%EOF\n")
        failed = await client.wait(job, timeout=TIMEOUT_S)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error.code == ErrorCode.PDF_DAMAGED
        with pytest.raises(JobFailed) as no_result:
            await client.result(failed)
        assert no_result.value.code == ErrorCode.PDF_DAMAGED
        with pytest.raises(NotFound):
            await client.result(failed.job_id)  # by id: the service says it has none


async def test_wait_times_out_cancel_and_pages_of_jobs(make_settings: Any) -> None:
    async with (
        running_stack(make_settings(), extract_running=False) as stack,
        AsyncClient(base_url(stack)) as client,
    ):
        jobs = [await client.submit(make_pdf([f"doc {i}"]), client_ref=f"c{i}") for i in range(5)]
        with pytest.raises(WaitTimeout):
            await client.wait(jobs[0], timeout=0.5)
        cancelled = await client.cancel(jobs[0])
        assert cancelled.status == "cancelled"
        assert (await client.cancel(jobs[0].job_id)).status == "cancelled"  # again: harmless
        assert (await client.wait(jobs[0], timeout=TIMEOUT_S)).status == "cancelled"

        page = await client.list_jobs(limit=2)
        assert len(page.jobs) == 2
        assert page.next_cursor
        listed = [j.job_id async for j in client.jobs(page_size=2)]
        assert listed == [j.job_id for j in reversed(jobs)]
        queued = [j.client_ref async for j in client.jobs(status="queued", page_size=2)]
        assert queued == ["c4", "c3", "c2", "c1"]


async def test_wait_polls_where_no_event_stream_gets_through(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_stream(self: AsyncClientImpl, job_id: str) -> Any:
        raise ServerError(502, "", "a proxy in the way")
        yield  # an async generator, like the real one

    monkeypatch.setattr(AsyncClientImpl, "_stream", no_stream)
    async with AsyncClient(base_url(stack)) as client:
        job = await client.submit(make_pdf(["polled"]))
        done = await client.wait(job, timeout=TIMEOUT_S)
    assert done.status == "completed"


async def test_api_keys(make_settings: Any) -> None:
    async with running_stack(make_settings(api_keys="a:key-a,b:key-b")) as stack:
        url = base_url(stack)
        async with AsyncClient(url) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.submit(make_pdf(["x"]))
        async with AsyncClient(url, api_key="key-a") as a, AsyncClient(url, api_key="key-b") as b:
            job = await a.wait(await a.submit(make_pdf(["tenant a"])), timeout=TIMEOUT_S)
            assert job.status == "completed"
            with pytest.raises(NotFound):
                await b.get(job)
            assert [j.job_id async for j in b.jobs()] == []


def readme_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Python client") :]
    section = section[: section.index("\n## ", 5)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_example(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


async def test_the_readme_examples_run(
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = readme_examples()
    assert len(examples) == 5
    (hook,) = [code for code in examples if "verify_webhook" in code]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.pdf").write_bytes(make_pdf(["hello from the readme"]))
    reports = tmp_path / "reports"
    reports.mkdir()
    for i in range(3):
        (reports / f"r{i}.pdf").write_bytes(make_pdf([f"report {i}", "second page"]))
    (reports / "notes.txt").write_text("not a pdf")
    async with hook_stack(make_settings, monkeypatch) as (stack, _):
        stack.start(batch_handler.serve)
        url = base_url(stack)
        for code in examples:
            if code is not hook:
                # Plain code on its own thread (the sync Client runs a loop of its own there).
                await asyncio.to_thread(run_example, code.replace(README_URL, url))
        out = capsys.readouterr().out
        assert "hello from the readme" in out
        assert "415" in out
        assert "refused: notes.txt JobErrorInfo(code=<ErrorCode.NOT_A_PDF" in out
        assert sorted(line for line in out.splitlines() if line.endswith("2 pages")) == [
            f"r{i}.pdf 2 pages" for i in range(3)
        ]

        # The webhook receiver of the README, given a real delivery of the service.
        verify = run_example(hook.replace('"whsec_…"', repr(SECRET)))["on_webhook"]
        async with receiver(status(204)) as rec, AsyncClient(url) as client:
            job = await client.submit("report.pdf", webhook=rec.url)
            (call,) = await rec.wait_calls(1)
        assert verify(call.body, call.headers) == 204
        assert f"job.completed {job.job_id} completed" in capsys.readouterr().out
        assert verify(call.body.replace(b"completed", b"failed"), call.headers) == 401


async def test_batches_through_the_client(stack: Stack) -> None:
    stack.start(batch_handler.serve)
    files: list[bytes] = [make_pdf([f"item {i}"]) for i in range(5)]
    files.insert(2, b"<html>no</html>")
    async with AsyncClient(base_url(stack)) as client:
        batch = await client.submit_batch(
            files, client_refs=[f"ref-{i}" for i in range(6)], options={"outputs": ["text"]}
        )
        assert batch.counts["accepted"] == 5
        assert [(i.index, i.client_ref) for i in batch.refused] == [(2, "ref-2")]
        assert batch.refused[0].error is not None
        assert batch.refused[0].error.code == ErrorCode.NOT_A_PDF
        outcomes = [o async for o in client.iter_results(batch, max_concurrency=2)]
        assert outcomes[0].item.index == 2  # refused: first, without a job
        assert outcomes[0].job is None
        texts = sorted(o.result["pages"][0]["text"].strip() for o in outcomes if o.result)
        assert texts == [f"item {i}" for i in range(5)]
        assert [i.index async for i in client.batch_items(batch, page_size=4)] == list(range(6))
        with pytest.raises(InvalidInput) as refused:
            await client.submit_batch([b"", b"nope"])
        assert refused.value.code == ErrorCode.BATCH_REFUSED
        assert [i["error"]["code"] for i in refused.value.body["items"]] == [
            "EMPTY_FILE",
            "NOT_A_PDF",
        ]
        with pytest.raises(NotFound):
            await client.get_batch("0" * 32)

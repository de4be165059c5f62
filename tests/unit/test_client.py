"""The Python client without the service: its imports, codes, retries, errors and webhook check."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import pdfrelay_client
from pdfrelay_client import (
    AsyncClient,
    Busy,
    Client,
    ConnectionFailed,
    ErrorCode,
    InvalidInput,
    NotFound,
    WebhookVerificationError,
    verify_webhook,
)
from shared.errors import ErrorCode as ServiceErrorCode
from shared.webhooks.signing import generate_secret, sign

SERVICE = frozenset({"shared", "handlers", "infra", "pymupdf", "fitz", "aio_pika", "aiormq"})
JOB = {"job_id": "a" * 32, "status": "queued", "progress": {"pages_done": 0}}


def test_importing_the_client_loads_none_of_the_service() -> None:
    code = (
        "import sys, pdfrelay_client\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pymupdf', 'fitz', 'aio_pika', 'aiormq', 'shared', 'handlers', 'infra', 'minio')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_client_imports_nothing_of_the_service_not_even_for_typing() -> None:
    package = Path(pdfrelay_client.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in SERVICE]
    assert found == []


def test_the_client_knows_every_code_of_the_service() -> None:
    assert {c.value for c in ErrorCode} == {c.value for c in ServiceErrorCode}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def fake_service(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


def refusal(status: int, code: str, **headers: str) -> web.Response:
    body = {"error": {"code": code, "message": f"{code.lower()} here"}}
    return web.json_response(body, status=status, headers=headers)


async def test_busy_answers_are_retried_as_retry_after_says_with_the_whole_upload() -> None:
    uploads: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        uploads.append(len(await request.read()))
        if len(uploads) <= 2:
            return refusal(503, "QUEUE_FULL", **{"Retry-After": "0"})
        return web.json_response(JOB, status=202)

    waits: list[float] = []
    async with fake_service(handler) as url, AsyncClient(url) as client:
        client.on_retry(lambda err, wait: waits.append(wait))
        job = await client.submit(b"%PDF-1.7 " + b"x" * 100_000)
    assert job.job_id == JOB["job_id"]
    assert waits == [0.0, 0.0]
    assert len(uploads) == 3
    assert len(set(uploads)) == 1
    assert uploads[0] > 100_000


async def test_retries_are_bounded_then_busy_is_raised() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return refusal(429, "QUOTA_EXCEEDED", **{"Retry-After": "0"})

    async with fake_service(handler) as url, AsyncClient(url, max_retries=3) as client:
        with pytest.raises(Busy) as caught:
            await client.get("a" * 32)
    assert calls == 4
    assert caught.value.code == ErrorCode.QUOTA_EXCEEDED
    assert caught.value.retry_after == 0.0


async def test_errors_carry_status_code_and_message_and_the_bearer_key_is_sent() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        if request.method == "POST":
            return refusal(415, "NOT_A_PDF")
        return refusal(404, "NOT_FOUND")

    async with fake_service(handler) as url, AsyncClient(url, api_key="k-1") as client:
        with pytest.raises(InvalidInput) as refused:
            await client.submit(b"<html>")
        with pytest.raises(NotFound):
            await client.result("b" * 32)
    assert (refused.value.status, refused.value.code) == (415, ErrorCode.NOT_A_PDF)
    assert refused.value.detail == "not_a_pdf here"
    assert seen == ["Bearer k-1", "Bearer k-1"]


async def test_a_missing_file_and_an_unreachable_service(unused_tcp_port: int) -> None:
    async with AsyncClient(f"http://127.0.0.1:{unused_tcp_port}") as client:
        with pytest.raises(FileNotFoundError):
            await client.submit("/nonexistent/a.pdf")
        with pytest.raises(ConnectionFailed, match="connection refused"):
            await client.get("a" * 32)


def test_the_sync_client_outside_a_loop(unused_tcp_port: int) -> None:
    with Client(f"http://127.0.0.1:{unused_tcp_port}") as client:
        with pytest.raises(ConnectionFailed):
            client.get("a" * 32)
        with pytest.raises(ConnectionFailed):
            list(client.jobs())


def test_verify_webhook_accepts_the_services_signature_and_nothing_else() -> None:
    secret, old = generate_secret(), generate_secret()
    body = b'{"type": "job.completed", "data": {"job_id": "x"}}'
    now = int(time.time())
    headers = {
        "Webhook-Id": "msg_x_job_completed",
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": sign("msg_x_job_completed", now, body, [secret]),
    }
    assert verify_webhook(body, headers, secret)["type"] == "job.completed"
    # During a rotation: the receiver knows both, the service signs with either.
    assert verify_webhook(body, headers, f"{old} {secret}")["data"] == {"job_id": "x"}
    assert verify_webhook(body, headers, [old, secret])["type"] == "job.completed"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.replace(b"x", b"y"), headers, secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, old)
    stale = now - 3600
    with pytest.raises(WebhookVerificationError):
        verify_webhook(
            body,
            headers
            | {
                "Webhook-Timestamp": str(stale),
                "Webhook-Signature": sign("msg_x_job_completed", stale, body, [secret]),
            },
            secret,
        )
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, {}, secret)

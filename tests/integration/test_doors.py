"""The two other doors — S3 object drop and broker requests — and URL sources: one job model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote_plus

import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from handlers import object_drop, requests, targets
from shared.adapters.broker import publish
from shared.intake.submit import Submitter
from shared.jobs.records import record_key
from shared.runtime.consumer import REASON_HEADER
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.helpers import wait_done

pytestmark = pytest.mark.integration


def minio_notification(bucket: str, key: str, etag: str, event: str = "Put") -> bytes:
    """The shape MinIO's AMQP target publishes (object key query-escaped, `/` as %2F)."""
    escaped = quote_plus(key, safe="")
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-28T13:00:00.000Z",
        "eventName": f"s3:ObjectCreated:{event}",
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "::1"},
        "responseElements": {
            "x-amz-request-id": "17A4",
            "x-minio-origin-endpoint": "http://m:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"}},
            "object": {
                "key": escaped,
                "size": 1234,
                "eTag": etag,
                "contentType": "application/pdf",
                "userMetadata": {"content-type": "application/pdf"},
                "sequencer": "17A4B",
            },
        },
        "source": {"host": "::1", "port": "", "userAgent": "MinIO (linux; amd64) mc"},
    }
    body = {
        "EventName": f"s3:ObjectCreated:{event}",
        "Key": f"{bucket}/{escaped}",
        "Records": [record],
    }
    return json.dumps(body).encode()


def aws_notification(bucket: str, key: str, etag: str) -> bytes:
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Copy",
        "s3": {
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), "size": 10, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]}).encode()


async def next_event(stack: Stack, routing_key: str) -> AsyncGenerator[Any, None]:
    """Yields a queue iterator of job events (subscribe before causing them)."""
    channel = await stack.ctx.connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(stack.ctx.topology.events, routing_key)
    try:
        async with queue.iterator(timeout=60) as it:
            async for message in it:
                await message.ack()
                yield json.loads(message.body)
    finally:
        await channel.close()


@asynccontextmanager
async def subscribed(stack: Stack, *routing_keys: str) -> AsyncIterator[asyncio.Queue[Any]]:
    """The bodies of the job events of `routing_keys`, bound before the block runs (an event
    published in it is never missed); the queue goes with its channel."""
    channel = await stack.ctx.connection.channel()
    try:
        queue = await channel.declare_queue(exclusive=True)
        for key in routing_keys:
            await queue.bind(stack.ctx.topology.events, key)
        bodies: asyncio.Queue[Any] = asyncio.Queue()

        async def on_message(message: AbstractIncomingMessage) -> None:
            bodies.put_nowait(json.loads(message.body))

        await queue.consume(on_message, no_ack=True)
        yield bodies
    finally:
        await channel.close()


async def next_body(bodies: asyncio.Queue[Any]) -> Any:
    async with asyncio.timeout(60):
        return await bodies.get()


async def drop_and_notify(stack: Stack, key: str, body: bytes, event: str = "Put") -> None:
    await stack.ctx.storage.put_bytes(key, body, "application/pdf")
    info = await stack.ctx.storage.stat(key)
    await publish(
        stack.ctx.channel,
        stack.ctx.topology.s3_events,
        "",
        minio_notification(stack.ctx.settings.s3_bucket, key, info.etag, event),
    )


async def test_object_drop_writes_the_outbox_once_per_object(stack: Stack) -> None:
    stack.start(object_drop.serve)
    stack.start(targets.serve)  # the outbox is the job's target: the targets handler writes it
    key = "inbox/reports/Quarterly Report ü.pdf"
    outbox = "outbox/reports/Quarterly Report ü.pdf"
    async with subscribed(stack, "job.completed", "job.delivered") as events:
        await drop_and_notify(stack, key, make_pdf(["dropped text"], title="Q"))
        # job.completed (its target pending: the outbox is written after), then job.delivered
        # (the outbox is there); two queues' messages, compared by the state they carry.
        both = {(e := await next_body(events))["target"]["state"]: e for _ in range(2)}
        assert both.keys() == {"pending", "delivered"}
        done = both["delivered"]
        assert done["status"] == "completed"
        assert done["door"] == "object-drop"
        assert done["client_ref"] == key
        assert done["target"] == {
            "kind": "outbox",
            "name": None,
            "state": "delivered",  # `job.delivered`: the outbox is there
            "error": None,
            "location": f"s3://{stack.ctx.settings.s3_bucket}/{outbox}",
            "objects": 2,  # .json and .md
            "settled_at": done["target"]["settled_at"],
        }
        result = await stack.ctx.storage.get_json(f"{outbox}.json")
        assert "dropped text" in result["pages"][0]["text"]
        markdown = await stack.ctx.storage.get_bytes(f"{outbox}.md")
        assert b"dropped text" in markdown

        # The same notification again (MinIO retries, replays) makes no second job.
        info = await stack.ctx.storage.stat(key)
        note = minio_notification(stack.ctx.settings.s3_bucket, key, info.etag)
        await publish(stack.ctx.channel, stack.ctx.topology.s3_events, "", note)
        # A notification for our own outbox write, and one for another bucket, make none either.
        out_note = minio_notification(stack.ctx.settings.s3_bucket, "outbox/x.pdf.json", "e")
        await publish(stack.ctx.channel, stack.ctx.topology.s3_events, "", out_note)
        other = minio_notification("another-bucket", "inbox/y.pdf", "e")
        await publish(stack.ctx.channel, stack.ctx.topology.s3_events, "", other)
        # A multipart upload of a new file is a job; its events prove the ones before were
        # handled.
        big = make_pdf(["multi"])
        await drop_and_notify(stack, "inbox/big.pdf", big, "CompleteMultipartUpload")
        second = [await next_body(events), await next_body(events)]
        assert [e["client_ref"] for e in second] == ["inbox/big.pdf"] * 2
    records = await stack.ctx.storage.list_keys("index/")
    assert len([k for k in records if k.endswith(".json")]) == 2

    # One job model: the dropped file's job is visible through the HTTP API.
    resp = await stack.client.get(f"/v1/jobs/{done['job_id']}")
    assert (await resp.json())["door"] == "object-drop"


async def test_object_drop_failure_lands_as_error_json(stack: Stack) -> None:
    stack.start(object_drop.serve)
    stack.start(targets.serve)
    async with subscribed(stack, "job.delivered") as events:
        await stack.ctx.storage.put_bytes("inbox/broken.pdf", b"%PDF-1.4\n" + b"\x00garbage" * 200)
        info = await stack.ctx.storage.stat("inbox/broken.pdf")
        note = aws_notification(stack.ctx.settings.s3_bucket, "inbox/broken.pdf", info.etag)
        await publish(stack.ctx.channel, stack.ctx.topology.s3_events, "", note)
        failed = await next_body(events)
    assert failed["status"] == "failed"
    assert failed["target"]["state"] == "delivered"
    error = await stack.ctx.storage.get_json("outbox/broken.pdf.error.json")
    assert error["job_id"] == failed["job_id"]
    assert error["error"]["code"] == failed["error"]["code"]


async def test_polling_finds_dropped_files_once(stack: Stack) -> None:
    await stack.ctx.storage.put_bytes("inbox/polled.pdf", make_pdf(["polled"]), "application/pdf")
    stack.start(targets.serve)
    async with subscribed(stack, "job.delivered") as events:
        # Two pollers (or a restart) over the same inbox submit it once.
        assert await object_drop.poll_inbox(stack.ctx, Submitter()) == 1
        assert await object_drop.poll_inbox(stack.ctx, Submitter()) == 1
        done = await next_body(events)
    assert done["client_ref"] == "inbox/polled.pdf"
    assert (
        "polled" in (await stack.ctx.storage.get_json("outbox/polled.pdf.json"))["pages"][0]["text"]
    )
    records = [k for k in await stack.ctx.storage.list_keys("index/") if k.endswith(".json")]
    assert len(records) == 1


async def test_a_pollers_next_pass_skips_what_it_submitted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = stack.ctx.storage
    await storage.put_bytes("inbox/once.pdf", make_pdf(["once"]), "application/pdf")
    done: set[tuple[str, str]] = set()
    assert await object_drop.poll_inbox(stack.ctx, Submitter(), done) == 1
    stats: list[str] = []
    stat = storage.stat

    async def counted(key: str, *args: Any, **kwargs: Any) -> Any:
        if key.startswith("inbox/"):  # not the extract handler's
            stats.append(key)
        return await stat(key, *args, **kwargs)

    monkeypatch.setattr(storage, "stat", counted)
    assert await object_drop.poll_inbox(stack.ctx, Submitter(), done) == 1
    assert stats == []  # one LIST, nothing per object
    # A new version of the object is a new drop.
    await storage.put_bytes("inbox/once.pdf", make_pdf(["twice"]), "application/pdf")
    assert await object_drop.poll_inbox(stack.ctx, Submitter(), done) == 1
    assert "inbox/once.pdf" in stats  # submitted (a new job: its source is checked too)
    assert len(done) == 1  # the old version is forgotten


async def request_message(stack: Stack, body: dict[str, Any] | bytes, **props: Any) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    await publish(
        stack.ctx.channel,
        stack.ctx.topology.requests,
        stack.ctx.topology.REQUEST_KEY,
        payload,
        **props,
    )


async def test_broker_request_replies_with_the_correlation_id(stack: Stack) -> None:
    stack.start(requests.serve)
    await stack.ctx.storage.put_bytes("shared/in.pdf", make_pdf(["over the broker"]))
    channel = await stack.ctx.connection.channel()
    reply_queue = await channel.declare_queue(exclusive=True)
    request = {
        "schema": "pdfrelay.extract-request/1",
        "source": {"s3": {"key": "shared/in.pdf"}},
        "client_ref": "svc-42",
    }
    for _ in range(2):  # the same message_id twice is one job
        await request_message(
            stack, request, message_id="req-1", reply_to=reply_queue.name, correlation_id="corr-9"
        )
    reply = await reply_queue.get(timeout=60, fail=False) or await _first(reply_queue)
    body = json.loads(reply.body)
    assert reply.correlation_id == "corr-9"
    assert body["type"] == "job.completed"
    assert body["data"]["door"] == "broker"
    assert body["data"]["client_ref"] == "svc-42"
    job_id = body["data"]["job_id"]
    resp = await stack.client.get(f"/v1/jobs/{job_id}/result")
    assert "over the broker" in (await resp.json())["pages"][0]["text"]
    records = [k for k in await stack.ctx.storage.list_keys("index/") if k.endswith(".json")]
    assert records == [record_key("default", job_id)]
    await channel.close()


async def _first(queue: Any) -> Any:
    async with queue.iterator(timeout=60) as it:
        async for message in it:
            await message.ack()
            return message
    raise AssertionError("no message")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid message"),
        ({"schema": "pdfrelay.extract-request/1", "source": {}}, "source"),
        ({"schema": "other/9", "source": {"url": "https://x.test/a.pdf"}}, "schema"),
        (
            {"schema": "pdfrelay.extract-request/1", "source": {"s3": {"key": "missing.pdf"}}},
            "SOURCE_UNREACHABLE",
        ),
        (
            {
                "schema": "pdfrelay.extract-request/1",
                "source": {"url": "https://x.test/a.pdf"},
                "target": {"name": "nope"},
            },
            "TARGET_NOT_ALLOWED",
        ),
    ],
    ids=["not-json", "no-source", "wrong-schema", "missing-object", "unknown-target"],
)
async def test_invalid_requests_are_dead_lettered_with_a_reason(
    stack: Stack, body: dict[str, Any] | bytes, reason: str
) -> None:
    stack.start(requests.serve)
    channel = await stack.ctx.connection.channel()
    dead = await channel.get_queue(stack.ctx.topology.requests_dead)
    await request_message(stack, body, message_id="bad-1")
    parked = await _first(dead)
    assert reason in parked.headers[REASON_HEADER]
    assert parked.message_id == "bad-1"
    # The consumer is still up: a valid request after it completes.
    await stack.ctx.storage.put_bytes("ok.pdf", make_pdf(["still up"]))
    events = next_event(stack, "job.completed")
    ok = {"schema": "pdfrelay.extract-request/1", "source": {"s3": {"key": "ok.pdf"}}}
    await request_message(stack, ok, message_id="good-1")
    assert (await anext(events))["door"] == "broker"
    await events.aclose()
    await channel.close()


@pytest.fixture
async def pdf_server() -> AsyncIterator[str]:
    big = b"%PDF-1.4\n" + b"0" * 50_000

    async def doc(request: web.Request) -> web.Response:
        return web.Response(body=make_pdf(["fetched from a url"]), content_type="application/pdf")

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/pdf")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/doc.pdf")

    app = web.Application()
    app.add_routes(
        [web.get("/doc.pdf", doc), web.get("/large.pdf", large), web.get("/moved", moved)]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_url_sources_are_fetched_with_the_ssrf_policy(
    make_settings: Any, pdf_server: str
) -> None:
    async with running_stack(make_settings()) as stack:
        resp = await stack.client.post(
            "/v1/jobs", json={"source": {"url": f"{pdf_server}/doc.pdf"}}
        )
        assert resp.status == 422
        body = await resp.json()
        assert body["error"]["code"] == "SOURCE_UNREACHABLE"
        assert "refused" in body["error"]["message"]

    settings = make_settings(webhook_allowed_networks="127.0.0.0/8", max_file_bytes=10_000)
    async with running_stack(settings) as stack:
        outcomes = {}
        for name in ("doc.pdf", "large.pdf", "moved", "missing.pdf"):
            resp = await stack.client.post(
                "/v1/jobs", json={"source": {"url": f"{pdf_server}/{name}"}}
            )
            assert resp.status == 202, await resp.text()
            outcomes[name] = await wait_done(stack, (await resp.json())["job_id"])
        assert outcomes["doc.pdf"]["status"] == "completed"
        assert outcomes["large.pdf"]["error"]["code"] == "FILE_TOO_LARGE"
        assert outcomes["moved"]["error"]["code"] == "SOURCE_UNREACHABLE"
        assert outcomes["missing.pdf"]["error"]["code"] == "SOURCE_UNREACHABLE"

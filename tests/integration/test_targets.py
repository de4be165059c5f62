"""Result destinations against the real broker and S3 server: every output once (also after
redeliveries), the tenant's own destinations only, presigned URLs under the SSRF policy, and a
failing destination ending in a clear state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aio_pika.abc import AbstractQueue
from aiohttp import web
from aiohttp.test_utils import TestServer

from handlers import targets
from pdfrelay_client import AsyncClient, ErrorCode, InvalidInput
from shared.adapters.storage import Storage
from shared.errors import JobNotFound, PermanentError
from shared.jobs import target_dlq
from shared.models import DeliveryTask, JobTarget
from shared.settings import Settings
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.helpers import upload, wait_done
from tests.integration.test_cli import PDFRELAY
from tests.integration.test_client import base_url

pytestmark = pytest.mark.integration

TIMEOUT_S = 60
OPTIONS = json.dumps({"outputs": ["text", "markdown", "metadata"]})


@asynccontextmanager
async def target_events(stack: Stack) -> AsyncIterator[AbstractQueue]:
    """A queue of this test's `job.delivered` / `job.delivery_failed` events (bind first)."""
    channel = await stack.ctx.connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    for key in ("job.delivered", "job.delivery_failed"):
        await queue.bind(stack.ctx.topology.events, key)
    try:
        yield queue
    finally:
        await queue.delete()
        await channel.close()


async def next_event(queue: AbstractQueue) -> tuple[str, Any, str | None]:
    """(routing key, body, message id) of the next event."""
    async with queue.iterator(timeout=TIMEOUT_S) as it:
        async for message in it:
            await message.ack()
            return message.routing_key or "", json.loads(message.body), message.message_id
    raise AssertionError("no event")


@asynccontextmanager
async def bucket(stack: Stack, name: str) -> AsyncIterator[None]:
    """A destination bucket of the test's own on the S3 server, removed with what it holds."""
    client = stack.ctx.storage.client
    await stack.ctx.storage._run(client.make_bucket, name)
    try:
        yield
    finally:
        objects = await stack.ctx.storage._run(
            lambda: [o.object_name for o in client.list_objects(name, recursive=True)]
        )
        for key in objects:
            await stack.ctx.storage._run(client.remove_object, name, key)
        await stack.ctx.storage._run(client.remove_bucket, name)


async def listing(stack: Stack, name: str) -> dict[str, str]:
    """key → ETag of every object in bucket `name`."""
    client = stack.ctx.storage.client
    return await stack.ctx.storage._run(
        lambda: {str(o.object_name): str(o.etag) for o in client.list_objects(name, recursive=True)}
    )


def count_puts(monkeypatch: pytest.MonkeyPatch, bucket_name: str) -> list[str]:
    """The keys written to `bucket_name` from now on (every write of the service's S3 client)."""
    puts: list[str] = []
    put_bytes = Storage.put_bytes

    async def counted(self: Storage, key: str, data: bytes, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("bucket") == bucket_name:
            puts.append(key)
        await put_bytes(self, key, data, *args, **kwargs)

    monkeypatch.setattr(Storage, "put_bytes", counted)
    return puts


async def test_a_destination_receives_every_output_once_also_after_redeliveries(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = f"dest-{uuid.uuid4().hex[:10]}"
    settings = make_settings(targets={"default": {"archive": {"bucket": dest, "prefix": "out"}}})
    async with running_stack(settings) as stack, bucket(stack, dest), target_events(stack) as ev:
        stack.start(targets.serve)
        job = await upload(
            stack, make_pdf(["one", "two"]), options=OPTIONS, target='{"name": "archive"}'
        )
        job_id = job["job_id"]
        assert job["target"]["state"] == "pending"
        key, body, message_id = await next_event(ev)
        assert (key, message_id) == ("job.delivered", f"msg_{job_id}_job_delivered")
        prefix = f"out/{job_id}/"
        assert body["status"] == "completed"
        assert body["target"]["location"] == f"s3://{dest}/{prefix}"

        stored = await listing(stack, dest)
        artifacts = [a["name"] for a in body["result"]["artifacts"]]
        assert artifacts, "markdown makes an artifact"
        names = {"result.json", "manifest.json", *artifacts}
        assert set(stored) == {prefix + n for n in names}
        assert body["target"]["objects"] == len(names)
        raw = await stack.ctx.storage.get_bytes(prefix + "manifest.json", bucket=dest)
        manifest = json.loads(raw)
        assert manifest["job_id"] == job_id
        assert manifest["status"] == "completed"
        assert {o["name"] for o in manifest["outputs"]} == names - {"manifest.json"}
        result = await (await stack.client.get(f"/v1/jobs/{job_id}/result")).read()
        assert await stack.ctx.storage.get_bytes(prefix + "result.json", bucket=dest) == result

        # The task again, once settled (a redelivery): the same event, nothing written.
        puts = count_puts(monkeypatch, dest)
        task = DeliveryTask(job_id=job_id)
        ctx = stack.ctx
        await ctx.broker.publish(ctx.topology.tasks, ctx.topology.DELIVER_KEY, task)
        assert (await next_event(ev))[2] == f"msg_{job_id}_job_delivered"
        assert puts == []

        # A crash after the manifest, before the record said so: the manifest is found, nothing
        # is written again.
        record, rev = await ctx.jobs.get_revision(job_id, "default")
        assert record.target is not None
        pending = record.target.model_copy(update={"state": "pending", "location": None})
        await ctx.jobs.save(record.model_copy(update={"target": pending}), rev)
        await ctx.broker.publish(ctx.topology.tasks, ctx.topology.DELIVER_KEY, task)
        assert (await next_event(ev))[0] == "job.delivered"
        assert puts == []

        # A crash before the manifest: the same bytes to the same keys, no second copy.
        record, rev = await ctx.jobs.get_revision(job_id, "default")
        await ctx.jobs.save(record.model_copy(update={"target": pending}), rev)
        await ctx.storage._run(ctx.storage.client.remove_object, dest, prefix + "manifest.json")
        await ctx.broker.publish(ctx.topology.tasks, ctx.topology.DELIVER_KEY, task)
        assert (await next_event(ev))[0] == "job.delivered"
        assert sorted(puts) == sorted(prefix + n for n in names)
        assert puts[-1] == prefix + "manifest.json"
        assert await listing(stack, dest) == stored

        view = await (await stack.client.get(f"/v1/jobs/{job_id}")).json()
        assert view["target"]["state"] == "delivered"
        assert view["status"] == "completed"


async def test_a_tenant_names_only_its_own_destinations(make_settings: Any) -> None:
    settings = make_settings(
        api_keys="a:key-a,b:key-b",
        targets={"a": {"archive": {"bucket": "tenant-a-results"}}},
    )
    pdf = make_pdf(["x"])
    async with running_stack(settings, extract_running=False) as stack:

        async def post(key: str, target: str) -> tuple[int, Any]:
            resp = await stack.client.post(
                "/v1/jobs",
                data=_form(pdf, target=target),
                headers={"Authorization": f"Bearer {key}"},
            )
            return resp.status, await resp.json()

        foreign = await post("key-b", '{"name": "archive"}')
        unknown = await post("key-a", '{"name": "nope"}')
        assert foreign[0] == unknown[0] == 422
        assert foreign[1] == unknown[1]  # the same answer: nothing tells whose name it is
        assert foreign[1]["error"]["code"] == "TARGET_NOT_ALLOWED"
        for bad in ('{"name": "archive", "bucket": "x"}', '{"bucket": "x"}', "[1]", "{"):
            status, body = await post("key-a", bad)
            assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST"), bad
        status, body = await post("key-a", '{"name": "archive"}')
        assert status == 202
        assert body["target"] == {
            "kind": "destination", "name": "archive", "state": "pending", "error": None,
            "location": None, "objects": None, "settled_at": None,
        }  # fmt: skip

        # JSON bodies and batches take the same target, with the same checks.
        resp = await stack.client.post(
            "/v1/jobs",
            json={"source": {"url": "https://example.invalid/a.pdf"}, "target": {"name": "x"}},
            headers={"Authorization": "Bearer key-b"},
        )
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "TARGET_NOT_ALLOWED"


def _form(data: bytes, **fields: str) -> Any:
    from tests.helpers import form

    return form(data, **fields)


@dataclass
class PutReceiver:
    """A loopback server taking PUTs: records them, answers `status`."""

    status: int = 200
    puts: list[tuple[str, str, bytes]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.puts.append((request.path, request.query_string, await request.read()))
        async with self.changed:
            self.changed.notify_all()
        return web.Response(status=self.status)


@asynccontextmanager
async def put_receiver(status: int = 200) -> AsyncIterator[PutReceiver]:
    rec = PutReceiver(status)
    app = web.Application()
    app.router.add_put("/{name:.*}", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        rec.url = str(server.make_url("/"))
        yield rec


def presigned(rec: PutReceiver, *names: str) -> str:
    return json.dumps({"urls": {n: f"{rec.url}up/{n}?X-Amz-Signature=s3cr3t-{n}" for n in names}})


async def test_presigned_urls_pass_only_when_allowed_networks_permit_them(
    make_settings: Any,
) -> None:
    pdf = make_pdf(["presigned"])
    async with put_receiver() as rec:
        async with running_stack(make_settings(), extract_running=False) as stack:
            resp = await stack.client.post(
                "/v1/jobs", data=_form(pdf, target=presigned(rec, "manifest.json"))
            )
            assert resp.status == 422
            error = (await resp.json())["error"]
            assert error["code"] == "TARGET_URL_REFUSED"
            assert "loopback" in error["message"]
            assert "s3cr3t" not in error["message"]
            no_manifest = await stack.client.post(
                "/v1/jobs", data=_form(pdf, target=json.dumps({"urls": {"a": rec.url}}))
            )
            assert no_manifest.status == 400
            async with AsyncClient(base_url(stack)) as client:
                with pytest.raises(InvalidInput) as refused:
                    await client.submit(pdf, target=json.loads(presigned(rec, "manifest.json")))
                assert refused.value.code == ErrorCode.TARGET_URL_REFUSED

        allowed = make_settings(webhook_allowed_networks="127.0.0.0/8")
        async with running_stack(allowed) as stack, target_events(stack) as ev:
            stack.start(targets.serve)
            job = await upload(
                stack, pdf, options=OPTIONS, target=presigned(rec, "result.json", "manifest.json")
            )
            assert "s3cr3t" not in json.dumps(job)
            key, body, _ = await next_event(ev)
            assert key == "job.delivered"
            assert "s3cr3t" not in json.dumps(body)
            assert body["target"]["location"] == f"{rec.url}up/manifest.json"
            assert [p[0] for p in rec.puts] == ["/up/result.json", "/up/manifest.json"]
            assert rec.puts[0][1] == "X-Amz-Signature=s3cr3t-result.json"
            result = await (await stack.client.get(f"/v1/jobs/{job['job_id']}/result")).read()
            assert rec.puts[0][2] == result
            manifest = json.loads(rec.puts[1][2])
            assert [o["name"] for o in manifest["outputs"]] == ["result.json"]
            assert manifest["skipped"] == [a["name"] for a in body["result"]["artifacts"]]
            # Settled: the URLs (their signatures) are gone from the record too.
            record = await stack.ctx.jobs.get(job["job_id"], "default")
            assert record.target is not None
            assert record.target.urls is None

            # The Python client names a target the same way, and reads how it went.
            async with AsyncClient(base_url(stack)) as client:
                urls = json.loads(presigned(rec, "manifest.json"))
                mine = await client.submit(pdf, client_ref="c", target=urls)
                assert mine.target is not None
                assert mine.target["state"] == "pending"
                assert (await next_event(ev))[0] == "job.delivered"
                delivered = await client.get(mine)
                assert delivered.target is not None
                assert delivered.target["state"] == "delivered"


async def test_a_failing_destination_is_retried_then_said_failed(make_settings: Any) -> None:
    settings = make_settings(
        webhook_allowed_networks="127.0.0.0/8", transient_retry_budget=1, transient_backoff_s=0.05
    )
    async with (
        put_receiver(status=503) as rec,
        running_stack(settings) as stack,
        target_events(stack) as ev,
    ):
        stack.start(targets.serve)
        job = await upload(stack, make_pdf(["down"]), target=presigned(rec, "manifest.json"))
        key, body, message_id = await next_event(ev)
        assert (key, message_id) == (
            "job.delivery_failed",
            f"msg_{job['job_id']}_job_delivery_failed",
        )
        assert body["status"] == "completed"
        target = body["target"]
        assert target["state"] == "failed"
        assert target["error"]["code"] == "TARGET_UNREACHABLE"
        assert "HTTP 503" in target["error"]["message"]
        assert "s3cr3t" not in json.dumps(body)
        assert len(rec.puts) == 2  # the first attempt and the one retry the budget allows
        view = await (await stack.client.get(f"/v1/jobs/{job['job_id']}")).json()
        assert view["target"] == target


def test_target_record_keeps_urls_out_of_its_repr() -> None:
    target = JobTarget(kind="presigned", urls={"manifest.json": "https://x/?sig=secret"})
    assert "secret" not in repr(target)


async def test_a_batch_target_receives_every_item_once(
    make_settings: Any, s3_endpoint: str
) -> None:
    dest = f"dest-{uuid.uuid4().hex[:10]}"
    # An endpoint and keys of its own: written through an S3 client of its own.
    config = {
        "bucket": dest,
        "endpoint": s3_endpoint,
        "access_key": "pdfrelay",
        "secret_key": "pdfrelay-secret",
    }
    settings = make_settings(targets={"default": {"archive": config}})
    async with running_stack(settings) as stack, bucket(stack, dest), target_events(stack) as ev:
        stack.start(targets.serve)
        for name in ("a", "b"):
            await stack.ctx.storage.put_bytes(f"in/{name}.pdf", make_pdf([name]), "application/pdf")
        resp = await stack.client.post(
            "/v1/batches",
            json={"prefix": {"prefix": "in/"}, "target": {"name": "archive"}},
        )
        assert resp.status == 202, await resp.text()
        job_ids = {i["job_id"] for i in (await resp.json())["items"]}
        settled = {(await next_event(ev))[1]["job_id"] for _ in job_ids}
        assert settled == job_ids
        stored = await listing(stack, dest)
        assert set(stored) == {
            f"{j}/{n}" for j in job_ids for n in ("result.json", "manifest.json")
        }
        for job_id in job_ids:
            raw = await stack.ctx.storage.get_bytes(f"{job_id}/manifest.json", bucket=dest)
            assert json.loads(raw)["batch_id"] is not None


async def test_a_delivery_that_keeps_crashing_ends_failed(make_settings: Any) -> None:
    dest = f"dest-{uuid.uuid4().hex[:10]}"
    settings = make_settings(targets={"default": {"archive": {"bucket": dest}}})
    async with running_stack(settings) as stack, target_events(stack) as ev:
        job = await upload(stack, make_pdf(["x"]), target='{"name": "archive"}')
        await wait_done(stack, job["job_id"])
        # The queue's delivery limit parks a task whose handler crashed on every attempt: here
        # the job's task is taken off the queue and put where the limit would put it.
        ctx = stack.ctx
        channel = await ctx.connection.channel()
        queue = await channel.declare_queue(ctx.topology.targets, passive=True)
        assert (await queue.purge()).message_count == 1
        await channel.close()
        await ctx.broker.publish(
            ctx.topology.dead_letters,
            ctx.topology.targets_dead,
            DeliveryTask(job_id=job["job_id"]),
        )
        stack.start(targets.serve)
        key, body, _ = await next_event(ev)
        assert key == "job.delivery_failed"
        assert body["status"] == "completed"
        assert body["target"]["error"]["code"] == "INTERNAL"


async def pdfrelay_cli(settings: Settings, *args: str) -> str:
    """`pdfrelay …` with the test's broker namespace, S3 server and bucket; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")} | {
        "PDFRELAY_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PDFRELAY_NAMESPACE": settings.namespace,
        "PDFRELAY_S3_ENDPOINT": settings.s3_endpoint or "",
        "PDFRELAY_S3_BUCKET": settings.s3_bucket,
    }
    done = await asyncio.to_thread(
        subprocess.run, [PDFRELAY, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_dlq_sends_parked_and_failed_target_deliveries_again(make_settings: Any) -> None:
    """`pdfrelay dlq … --targets`: a task parked in pdfrelay.targets.dead is listed and moved
    back; a target that failed (its bucket missing) is reopened, once the bucket is there, and
    delivered."""
    dest = f"dest-{uuid.uuid4().hex[:10]}"
    settings = make_settings(targets={"default": {"archive": {"bucket": dest}}})
    async with running_stack(settings) as stack, target_events(stack) as ev:
        ctx = stack.ctx
        job = await upload(stack, make_pdf(["again"]), target='{"name": "archive"}')
        job_id = job["job_id"]
        await wait_done(stack, job_id)
        # Parked as the delivery limit parks it (no targets handler runs yet to settle it).
        channel = await ctx.connection.channel()
        queue = await channel.declare_queue(ctx.topology.targets, passive=True)
        assert (await queue.purge()).message_count == 1
        await channel.close()
        task = DeliveryTask(job_id=job_id)
        await ctx.broker.publish(ctx.topology.dead_letters, ctx.topology.targets_dead, task)

        parked = await target_dlq.list_parked(ctx.settings)
        assert parked == [target_dlq.ParkedDelivery(job_id, "default", "rejected")]
        out = await pdfrelay_cli(ctx.settings, "dlq", "list", "--targets", "--json")
        assert json.loads(out) == [{"job_id": job_id, "tenant": "default", "reason": "rejected"}]
        assert await target_dlq.list_parked(ctx.settings) == parked  # listing leaves it parked
        with pytest.raises(JobNotFound):  # no such job, nothing of it parked
            await target_dlq.replay(ctx, job_id="f" * 32)
        assert await target_dlq.replay(ctx, replay_all=True) == 1
        assert await target_dlq.list_parked(ctx.settings) == []

        # Back on pdfrelay.targets: delivered now, to a bucket that does not exist: failed.
        stack.start(targets.serve)
        key, body, _ = await next_event(ev)
        assert key == "job.delivery_failed"
        assert body["target"]["error"]["code"] == "TARGET_UNREACHABLE"

        async with bucket(stack, dest):
            # The failed target reopened (its job's id), delivered this time.
            out = await pdfrelay_cli(ctx.settings, "dlq", "replay", "--targets", "--job", job_id)
            assert "queued 1 target deliveries again" in out
            key, body, _ = await next_event(ev)
            assert key == "job.delivered"
            assert body["target"]["state"] == "delivered"
            assert body["target"]["error"] is None
            assert set(await listing(stack, dest)) == {
                f"{job_id}/result.json",
                f"{job_id}/manifest.json",
            }
            # Delivered: nothing to send again.
            with pytest.raises(PermanentError) as refused:
                await target_dlq.replay(ctx, job_id=job_id)
            assert str(refused.value.code) == "CONFLICT"

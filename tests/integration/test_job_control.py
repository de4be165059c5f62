"""Job control on the real broker and S3 server: cancel, list, events, estimates, retention,
the page quota, and the CLI against `pdfrelay dev`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractQueue

from handlers import jobs_api
from pdfrelay_client.sse import sse_events
from shared.jobs.quota import pages_in_flight
from shared.jobs.records import (
    index_key,
    index_name,
    index_prefix,
    inflight_prefix,
    legacy_record_key,
)
from shared.jobs.retention import RULE_ID_PREFIX, apply_lifecycle, sweep
from shared.jobs.throughput import ThroughputMeter
from shared.models import Job, JobStatus, WebhookDelivery, new_job_id, utcnow
from tests.conftest import Stack, _free_port, running_stack
from tests.factories import make_pdf
from tests.helpers import form, upload, wait_done
from tests.integration.test_cli import PDFRELAY, running_dev

pytestmark = pytest.mark.integration

HOOK = "http://127.0.0.1:9/hook"
TIMEOUT_S = 30


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def events_bound(stack: Stack, routing_key: str) -> AsyncIterator[AbstractQueue]:
    """A queue of our own on the events exchange, bound before what we wait for happens."""
    channel = await stack.ctx.connection.channel()
    try:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(stack.ctx.topology.events, routing_key)
        yield queue
    finally:
        await channel.close()


async def next_event(queue: AbstractQueue, job_id: str) -> dict[str, Any]:
    async with queue.iterator(timeout=TIMEOUT_S) as it:
        async for message in it:
            await message.ack()
            if (message.headers or {}).get("job_id") == job_id:
                body: dict[str, Any] = json.loads(message.body)
                return body
    raise AssertionError("no event")


async def webhook_delivery(stack: Stack, job_id: str) -> WebhookDelivery:
    """The job's delivery on the dispatch queue (no webhooks handler runs in these stacks)."""
    channel = await stack.ctx.connection.channel()
    try:
        queue = await channel.get_queue(stack.ctx.topology.webhooks)
        async with queue.iterator(timeout=TIMEOUT_S) as it:
            async for message in it:
                await message.ack()
                delivery = WebhookDelivery.model_validate_json(message.body)
                if delivery.job_id == job_id:
                    return delivery
    finally:
        await channel.close()
    raise AssertionError("no delivery")


def meter(stack: Stack) -> ThroughputMeter:
    """The throughput meter of the stack's ingress."""
    app = stack.client.app
    assert app is not None
    api: jobs_api.JobsApi = app[jobs_api.API]
    return api.meter


def freezer(stack: Stack, after: int = 0) -> asyncio.Queue[int]:
    """Stop (SIGSTOP) every worker the pool starts from now on, but for the first `after`
    documents; their pids arrive in order."""
    assert stack.ctx.pool is not None
    pids: asyncio.Queue[int] = asyncio.Queue()
    starts = 0

    def freeze(pid: int) -> None:
        nonlocal starts
        starts += 1
        if starts <= after:
            return
        os.kill(pid, signal.SIGSTOP)
        pids.put_nowait(pid)

    stack.ctx.pool.on_start.append(freeze)
    return pids


# --- cancel ------------------------------------------------------------------------------------


async def test_cancel_of_a_queued_job_skips_its_extraction(make_settings: Any) -> None:
    settings = make_settings(webhook_allowed_networks="127.0.0.0/8")
    async with running_stack(settings, extract_running=False) as stack:
        assert stack.ctx.pool is not None
        job = await upload(stack, make_pdf(["never extracted"]), webhook_url=HOOK)
        resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["status"] == "cancelled"
        assert body["finished_at"]

        # When the task reaches the extract handler, the job's end is announced again (now
        # with its webhook, whose token only the task carries) and nothing is extracted.
        async with events_bound(stack, "job.cancelled") as events:
            stack.start_extract()
            announced = await next_event(events, job["job_id"])
        assert announced["status"] == "cancelled"
        delivery = await webhook_delivery(stack, job["job_id"])
        assert delivery.event_type == "job.cancelled"
        assert stack.ctx.pool.started == 0
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}")
        assert (await resp.json())["status"] == "cancelled"
        assert await stack.ctx.storage.list_keys(f"results/{job['job_id']}/") == []

        # Cancelling again is harmless (a retried DELETE); a completed job answers 409 (below).
        resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
        assert resp.status == 200
        assert (await resp.json())["status"] == "cancelled"
        resp = await stack.client.delete(f"/v1/jobs/{'0' * 32}")
        assert resp.status == 404


async def test_cancel_of_a_running_job_stops_its_worker(make_settings: Any) -> None:
    # progress_after_s=0: the record says processing as soon as the worker has the job.
    settings = make_settings(webhook_allowed_networks="127.0.0.0/8", progress_after_s=0)
    async with running_stack(settings) as stack:
        pool = stack.ctx.pool
        assert pool is not None
        pids = freezer(stack)
        job = await upload(stack, make_pdf(["stuck"]), webhook_url=HOOK)
        pid = await asyncio.wait_for(pids.get(), TIMEOUT_S)
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}")
        assert (await resp.json())["status"] == "processing"

        resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == "cancelled"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert pool.crashed == 0  # a cancel is not a crash
        delivery = await webhook_delivery(stack, job["job_id"])
        assert delivery.event_type == "job.cancelled"
        assert json.loads(delivery.body)["data"]["status"] == "cancelled"

        # The pool goes on, and a finished job cannot be cancelled.
        pool.on_start.clear()
        nxt = await upload(stack, make_pdf(["next"]))
        assert (await wait_done(stack, nxt["job_id"]))["status"] == "completed"
        resp = await stack.client.delete(f"/v1/jobs/{nxt['job_id']}")
        assert resp.status == 409
        error = (await resp.json())["error"]
        assert error["code"] == "CONFLICT"
        assert "completed" in error["message"]


async def test_status_shows_queue_position_and_eta(make_settings: Any) -> None:
    async with running_stack(make_settings(extract_workers=2, progress_after_s=0)) as stack:
        assert stack.ctx.pool is not None
        first = await upload(stack, make_pdf(["one", "two"]))
        await wait_done(stack, first["job_id"])  # the ingress has measured one job
        assert meter(stack).samples == 1

        pids = freezer(stack)
        running = [await upload(stack, make_pdf(["busy"])) for _ in range(2)]
        for _ in running:
            await asyncio.wait_for(pids.get(), TIMEOUT_S)
        queued = await upload(stack, make_pdf(["waiting"]))

        status = await (await stack.client.get(f"/v1/jobs/{queued['job_id']}")).json()
        assert status["status"] == "queued"
        assert status["queue_position"] == 1
        assert status["eta_s"] > 0
        status = await (await stack.client.get(f"/v1/jobs/{running[0]['job_id']}")).json()
        assert status["status"] == "processing"
        assert status["queue_position"] is None
        assert status["eta_s"] is not None

        stack.ctx.pool.on_start.clear()
        for job in running:
            resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
            assert (await resp.json())["status"] == "cancelled"
        done = await wait_done(stack, queued["job_id"])
        assert done["status"] == "completed"
        assert done["queue_position"] is None
        assert done["eta_s"] is None


# --- list ----------------------------------------------------------------------------------------


async def test_list_pages_filters_and_tenant_isolation(make_settings: Any) -> None:
    settings = make_settings(api_keys="a:ka,b:kb")
    async with running_stack(settings, extract_running=False) as stack:
        a, b = auth("ka"), auth("kb")
        mine = [
            await upload(stack, make_pdf([f"a{i}"]), headers=a, client_ref=f"r{i}")
            for i in range(5)
        ]
        theirs = [await upload(stack, make_pdf(["b"]), headers=b) for _ in range(2)]
        newest_first = [j["job_id"] for j in reversed(mine)]

        async def listing(headers: dict[str, str], **params: str) -> Any:
            resp = await stack.client.get("/v1/jobs", params=params, headers=headers)
            assert resp.status == 200, await resp.text()
            return await resp.json()

        seen: list[str] = []
        cursor: str | None = None
        sizes = []
        while True:
            page = await listing(a, limit="2", **({"cursor": cursor} if cursor else {}))
            sizes.append(len(page["jobs"]))
            seen += [j["job_id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first
        assert sizes == [2, 2, 1]
        assert page["jobs"][0]["links"]["self"].endswith(mine[0]["job_id"])

        page = await listing(a, client_ref="r3")
        assert [j["job_id"] for j in page["jobs"]] == [mine[3]["job_id"]]
        assert len((await listing(a, status="queued"))["jobs"]) == 5
        assert (await listing(a, status="completed,failed"))["jobs"] == []
        assert len((await listing(a, door="http"))["jobs"]) == 5
        assert (await listing(a, door="broker"))["jobs"] == []
        after = mine[2]["created_at"]
        page = await listing(a, created_after=after)
        assert [j["job_id"] for j in page["jobs"]] == newest_first[:2]
        page = await listing(a, created_after=after, limit="1")
        assert len(page["jobs"]) == 1
        assert page["next_cursor"] is not None
        page = await listing(a, created_after=after, limit="1", cursor=page["next_cursor"])
        assert [j["job_id"] for j in page["jobs"]] == [newest_first[1]]

        resp = await stack.client.delete(f"/v1/jobs/{mine[1]['job_id']}", headers=a)
        assert resp.status == 200
        page = await listing(a, status="cancelled")
        assert [j["job_id"] for j in page["jobs"]] == [mine[1]["job_id"]]

        # Tenant b sees only its own, whatever cursor it brings; a cannot cancel b's job.
        page = await listing(b)
        assert sorted(j["job_id"] for j in page["jobs"]) == sorted(j["job_id"] for j in theirs)
        page = await listing(b, cursor=_cursor_of(mine[4]))
        assert {j["job_id"] for j in page["jobs"]} <= {j["job_id"] for j in theirs}
        resp = await stack.client.delete(f"/v1/jobs/{theirs[0]['job_id']}", headers=a)
        assert resp.status == 404
        resp = await stack.client.get("/v1/jobs")
        assert resp.status == 401

        for bad in ({"limit": "0"}, {"status": "nope"}, {"door": "x"}, {"cursor": "../b"}):
            resp = await stack.client.get("/v1/jobs", params=bad, headers=a)
            assert resp.status == 400, bad
            assert (await resp.json())["error"]["code"] == "INVALID_REQUEST"


def _cursor_of(job: dict[str, Any]) -> str:
    """The cursor that points just after `job` in its tenant's index."""
    return index_name(datetime.fromisoformat(job["created_at"]), job["job_id"])


# --- events --------------------------------------------------------------------------------------


async def read_events(resp: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async for kind, data in sse_events(resp.content):
        yield kind, json.loads(data)


async def test_event_stream_delivers_progress_and_the_end(make_settings: Any) -> None:
    async with running_stack(make_settings(progress_after_s=0), extract_running=False) as stack:
        job = await upload(stack, make_pdf(["one", "two", "three"]))
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/events")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        kinds: list[str] = []
        progress: list[dict[str, Any]] = []
        async with asyncio.timeout(TIMEOUT_S):
            async for kind, view in read_events(resp):
                kinds.append(kind)
                if kind == "job.state":
                    assert view["status"] == "queued"
                    stack.start_extract()  # only now: the stream sees the job run
                elif kind == "job.progress":
                    progress.append(view["progress"])
                else:
                    final = view
        # The server closed the stream after the terminal event.
        assert kinds[0] == "job.state"
        assert kinds[-1] == "job.completed"
        assert final["status"] == "completed"
        assert progress
        assert progress[-1] == {"pages_done": 3, "pages_total": 3}

        # A job that has ended: its terminal event alone.
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/events")
        async with asyncio.timeout(TIMEOUT_S):
            events = [kind async for kind, _ in read_events(resp)]
        assert events == ["job.completed"]
        resp = await stack.client.get(f"/v1/jobs/{'0' * 32}/events")
        assert resp.status == 404


async def test_one_tenant_stream_follows_many_jobs_and_no_other_tenants(
    make_settings: Any,
) -> None:
    acme, globex = {"Authorization": "Bearer ka"}, {"Authorization": "Bearer kb"}
    settings = make_settings(api_keys="a:ka,b:kb")
    async with running_stack(settings, extract_running=False) as stack:
        first = await upload(stack, make_pdf(["first"]), headers=acme)
        theirs = await upload(stack, make_pdf(["theirs"]), headers=globex)
        resp = await stack.client.get(
            "/v1/events",
            params={"jobs": f"{first['job_id']},{theirs['job_id']},{'0' * 32}"},
            headers=acme,
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(resp)
        async with asyncio.timeout(TIMEOUT_S):
            # The listed jobs' states first: only the tenant's own.
            kind, view = await anext(events)
            assert (kind, view["job_id"], view["status"]) == (
                "job.state",
                first["job_id"],
                "queued",
            )
            # Then every job of the tenant over this one stream, also those submitted after.
            more = [await upload(stack, make_pdf([f"more {i}"]), headers=acme) for i in range(5)]
            stack.start_extract()
            assert (await wait_done(stack, theirs["job_id"], headers=globex))["status"] == (
                "completed"
            )
            ended: set[str] = set()
            wanted = {first["job_id"], *(j["job_id"] for j in more)}
            seen: list[tuple[str, str]] = []
            while ended != wanted:
                kind, view = await anext(events)
                seen.append((kind, view["job_id"]))
                if kind == "job.completed":
                    ended.add(view["job_id"])
            # Anything of the other tenant's job was on the watcher's queue before this one's
            # events: a last job of ours, seen on the stream, proves none came through.
            last = await upload(stack, make_pdf(["last"]), headers=acme)
            while (kind, view["job_id"]) != ("job.completed", last["job_id"]):
                kind, view = await anext(events)
                seen.append((kind, view["job_id"]))
        assert theirs["job_id"] not in {i for _, i in seen}
        resp.close()
        # Listing too many jobs is refused; without a key, nothing.
        many = ",".join(new_job_id() for _ in range(201))
        assert (
            await stack.client.get("/v1/events", params={"jobs": many}, headers=acme)
        ).status == 400
        assert (await stack.client.get("/v1/events")).status == 401


async def test_a_followed_job_is_heard_to_start_before_its_worker_reports_a_page(
    make_settings: Any,
) -> None:
    # Its worker stalls at once: the record says processing, and no page is ever reported.
    async with running_stack(make_settings(progress_after_s=0)) as stack:
        assert stack.ctx.pool is not None
        pids = freezer(stack)
        resp = await stack.client.get("/v1/events")
        events = read_events(resp)
        job = await upload(stack, make_pdf(["stalls"]))
        try:
            await asyncio.wait_for(pids.get(), TIMEOUT_S)
            seen: list[tuple[str, str]] = []
            async with asyncio.timeout(TIMEOUT_S):
                while not seen or seen[-1] != ("job.progress", "processing"):
                    kind, view = await anext(events)
                    assert view["job_id"] == job["job_id"]
                    seen.append((kind, view["status"]))
        finally:
            resp.close()
            stack.ctx.pool.on_start.clear()
            resp = await stack.client.delete(f"/v1/jobs/{job['job_id']}")
            assert (await resp.json())["status"] == "cancelled"


# --- retention -----------------------------------------------------------------------------------


async def test_retention_deletes_ended_jobs_and_keeps_running_ones(make_settings: Any) -> None:
    async with running_stack(make_settings(retention_days=1)) as stack:
        ctx = stack.ctx
        pdf = make_pdf(["keep me a while"])
        old = await upload(stack, pdf, headers={"Idempotency-Key": "k"})
        await wait_done(stack, old["job_id"])
        old_id = old["job_id"]
        # A job created long ago that has not ended (its task lost in some other way).
        long_ago = utcnow() - timedelta(days=5)
        stuck = Job(job_id=new_job_id(long_ago), created_at=long_ago)
        await ctx.jobs.create(stuck)

        retention = timedelta(days=1)
        report = await sweep(ctx.jobs, retention, now=utcnow())
        assert report.jobs_deleted == 0
        assert report.jobs_kept_running == 1
        assert (await stack.client.get(f"/v1/jobs/{old_id}")).status == 200

        report = await sweep(ctx.jobs, retention, now=utcnow() + timedelta(days=2))
        assert report.jobs_deleted == 1
        assert report.jobs_kept_running == 1
        assert report.idempotency_keys_deleted == 1
        assert (await stack.client.get(f"/v1/jobs/{old_id}")).status == 404
        assert [k for k in await ctx.storage.list_keys("") if old_id in k] == []
        assert (await stack.client.get(f"/v1/jobs/{stuck.job_id}")).status == 200
        listed = await (await stack.client.get("/v1/jobs")).json()
        assert [j["job_id"] for j in listed["jobs"]] == [stuck.job_id]
        # The idempotency key is free again.
        again = await upload(stack, pdf, headers={"Idempotency-Key": "k"})
        assert again["job_id"] != old_id

        assert await apply_lifecycle(ctx.jobs, retention)
        config = await ctx.storage.get_lifecycle()
        assert config is not None
        ours = {r.rule_id: r.expiration.days if r.expiration else None for r in config.rules}
        assert ours[f"{RULE_ID_PREFIX}jobs"] == 1
        assert ours[f"{RULE_ID_PREFIX}results"] == 1


async def test_records_of_the_previous_layout_stay_readable_listed_and_swept(
    make_settings: Any,
) -> None:
    """A job the previous version stored (uuid4 id, record at `jobs/{id}/record.json`, an
    empty index entry beside it) is found by its id, listed among new jobs in order,
    cancelled, and deleted by retention like the others."""
    settings = make_settings(api_keys="a:ka,b:kb", retention_days=1)
    async with running_stack(settings, extract_running=False) as stack:
        ctx = stack.ctx
        a = auth("ka")
        first = await upload(stack, make_pdf(["new, before"]), headers=a)
        old_created = utcnow()
        done = Job(
            job_id=uuid.uuid4().hex,
            tenant="a",
            status=JobStatus.COMPLETED,
            created_at=old_created,
            finished_at=old_created,
        )
        queued = Job(job_id=uuid.uuid4().hex, tenant="a", created_at=old_created)
        for old in (done, queued):
            await ctx.storage.put_bytes(
                legacy_record_key(old.job_id), old.model_dump_json(by_alias=True).encode()
            )
            await ctx.storage.put_bytes(
                index_key("a", old.created_at, old.job_id), b"", "application/octet-stream"
            )
        second = await upload(stack, make_pdf(["new, after"]), headers=a)

        resp = await stack.client.get(f"/v1/jobs/{done.job_id}", headers=a)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == "completed"
        assert (await stack.client.get(f"/v1/jobs/{done.job_id}", headers=auth("kb"))).status == 404
        listed = await (await stack.client.get("/v1/jobs", headers=a)).json()
        ids = [j["job_id"] for j in listed["jobs"]]
        assert set(ids[1:3]) == {done.job_id, queued.job_id}
        assert (ids[0], ids[3]) == (second["job_id"], first["job_id"])
        paged = await (await stack.client.get("/v1/jobs", params={"limit": "2"}, headers=a)).json()
        rest = await (
            await stack.client.get(
                "/v1/jobs", params={"limit": "2", "cursor": paged["next_cursor"]}, headers=a
            )
        ).json()
        assert [j["job_id"] for j in paged["jobs"] + rest["jobs"]] == ids

        # A cancel of the old queued job is stored where its record lives.
        resp = await stack.client.delete(f"/v1/jobs/{queued.job_id}", headers=a)
        assert resp.status in (200, 202), await resp.text()
        stored = Job.model_validate_json(
            await ctx.storage.get_bytes(legacy_record_key(queued.job_id))
        )
        assert stored.status is JobStatus.CANCELLED
        assert len(await ctx.storage.list_keys(index_prefix("a"))) == 4  # no second entry

        report = await sweep(ctx.jobs, timedelta(days=1), now=utcnow() + timedelta(days=2))
        assert report.jobs_deleted == 2  # the old ones; the new ones are still queued
        for old in (done, queued):
            assert [k for k in await ctx.storage.list_keys("") if old.job_id in k] == []
            assert (await stack.client.get(f"/v1/jobs/{old.job_id}", headers=a)).status == 404


# --- page quota ----------------------------------------------------------------------------------


async def test_tenant_over_its_page_quota_gets_429(make_settings: Any) -> None:
    settings = make_settings(api_keys="a:ka,b:kb", tenant_page_quota=4)
    async with running_stack(settings, extract_running=False) as stack:
        a, b = auth("ka"), auth("kb")
        storage = stack.ctx.storage
        three = await upload(stack, make_pdf(["1", "2", "3"]), headers=a)

        resp = await stack.client.post("/v1/jobs", data=form(make_pdf(["1", "2"])), headers=a)
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "QUOTA_EXCEEDED"
        assert int(resp.headers["Retry-After"]) >= 1
        # Nothing of the refused upload stayed behind.
        assert len(await storage.list_keys("uploads/")) == 1
        assert len(await storage.list_keys(inflight_prefix("a"))) == 1

        others = await upload(stack, make_pdf(["1", "2", "3"]), headers=b)
        small = await upload(stack, make_pdf(["1"]), headers=a)  # 3 + 1 fits
        assert await pages_in_flight(storage, "a") == 4

        # A cancelled job gives its pages back at once.
        resp = await stack.client.delete(f"/v1/jobs/{three['job_id']}", headers=a)
        assert resp.status == 200
        two = await upload(stack, make_pdf(["1", "2"]), headers=a)
        assert await pages_in_flight(storage, "a") == 3

        # A finished job too; and now Retry-After comes from the measured throughput.
        stack.start_extract()
        for job, headers in ((others, b), (small, a), (two, a)):
            assert (await wait_done(stack, job["job_id"], headers))["status"] == "completed"
        assert await pages_in_flight(storage, "a") == 0
        assert await pages_in_flight(storage, "b") == 0
        assert meter(stack).pages_per_s is not None
        pids = freezer(stack)
        four = await upload(stack, make_pdf(["1", "2", "3", "4"]), headers=a)
        await asyncio.wait_for(pids.get(), TIMEOUT_S)
        resp = await stack.client.post("/v1/jobs", data=form(make_pdf(["1"])), headers=a)
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 3600
        resp = await stack.client.delete(f"/v1/jobs/{four['job_id']}", headers=a)
        assert resp.status == 200


# --- the CLI against `pdfrelay dev` ------------------------------------------------------------


class HangingServer:
    """Accepts HTTP connections and never answers: a URL source that keeps a worker busy."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connected = threading.Event()
        self.connections = threading.Semaphore(0)
        """Released once per accepted connection."""
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)
            self.connected.set()
            self.connections.release()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def dev(amqp_url: str, tmp_path: Path) -> Iterator[str]:
    """`pdfrelay dev` with one extraction worker (so a second job waits in the queue)."""
    with running_dev(
        amqp_url, tmp_path, extract_workers="1", webhook_allowed_networks="127.0.0.0/8"
    ) as url:
        yield url


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PDFRELAY, *args], capture_output=True, text=True, timeout=120, check=False
    )


def http_json(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_cli_submit_jobs_and_cancel(dev: str, tmp_path: Path) -> None:
    for name, text in (("alpha", "alpha page text"), ("beta", "beta page text")):
        (tmp_path / f"{name}.pdf").write_bytes(make_pdf([text, f"{name} two"]))
    out_dir = tmp_path / "out"
    done = cli(
        "submit",
        str(tmp_path / "alpha.pdf"),
        str(tmp_path / "beta.pdf"),
        "--out",
        str(out_dir),
        "--options",
        '{"outputs": ["text", "markdown"]}',
        "--url",
        dev,
    )
    assert done.returncode == 0, done.stderr
    assert "alpha page text" in (out_dir / "alpha.txt").read_text()
    assert "beta page text" in (out_dir / "beta.txt").read_text()
    assert "alpha page text" in (out_dir / "alpha.md").read_text()
    assert json.loads((out_dir / "beta.json").read_text())["page_count"] == 2

    listed = cli("jobs", "--json", "--url", dev)
    assert listed.returncode == 0, listed.stderr
    jobs = {j["filename"]: j for j in map(json.loads, listed.stdout.splitlines())}
    assert set(jobs) == {"alpha.pdf", "beta.pdf"}
    alpha = jobs["alpha.pdf"]["job_id"]

    # Both tasks the one worker's handler prefetches (workers + 1) fetch a source that never
    # comes, so the next upload stays queued.
    hanging = HangingServer()
    try:
        for _ in range(2):
            busy = http_json(
                "POST",
                f"{dev}/v1/jobs",
                {"source": {"url": f"http://127.0.0.1:{hanging.port}/slow.pdf"}},
            )
        for _ in range(2):
            assert hanging.connections.acquire(timeout=TIMEOUT_S)
        (tmp_path / "gamma.pdf").write_bytes(make_pdf(["gamma"]))
        queued = cli("submit", str(tmp_path / "gamma.pdf"), "--url", dev)
        assert queued.returncode == 0, queued.stderr
        gamma = queued.stdout.strip()

        cancel = cli("cancel", gamma, alpha, "f" * 32, "--url", dev)
        assert cancel.returncode == 1  # not every one could be cancelled
        assert cancel.stdout.strip() == f"{gamma}: cancelled"
        assert f"{alpha}: cannot cancel" in cancel.stderr
        assert "completed" in cancel.stderr
        assert f"{'f' * 32}: no such job" in cancel.stderr

        table = cli("jobs", "--status", "cancelled", "--url", dev)
        assert table.returncode == 0, table.stderr
        assert gamma in table.stdout
        assert alpha not in table.stdout
    finally:
        hanging.close()
    # The fetch fails, the worker is free, gamma's task comes up and is skipped.
    ended = http_json("GET", f"{dev}/v1/jobs/{busy['job_id']}?wait=30")
    assert ended["status"] == "failed"
    assert http_json("GET", f"{dev}/v1/jobs/{gamma}")["status"] == "cancelled"

    unreachable = cli("jobs", "--url", f"http://127.0.0.1:{_free_port()}")
    assert unreachable.returncode == 2
    assert "cannot reach pdfrelay" in unreachable.stderr
    for result in (done, cancel, unreachable):
        assert "Traceback" not in result.stderr

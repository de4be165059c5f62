"""Webhook delivery on the real broker and S3 server, to real local HTTP receivers."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from shared.adapters.broker import publish
from shared.models import WebhookDelivery, WebhookState, WebhookStateUpdate
from shared.settings import Settings
from shared.webhooks.dead import list_dead, replay_dead
from shared.webhooks.signing import generate_secret
from shared.webhooks.statelog import StateLog
from tests.conftest import Stack, _free_port, running_stack
from tests.factories import make_pdf
from tests.helpers import form
from tests.reliability.harness import fault_proxy, watch_logs

pytestmark = pytest.mark.integration

SECRET = generate_secret()
OLD_SECRET = generate_secret()
TOKEN = "tok-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
LADDER = "100ms,200ms,300ms"

Reply = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A local webhook receiver: records every request, answers what `reply` says."""

    reply: Reply
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        call = Call(dict(request.headers), await request.read(), time.monotonic())
        self.calls.append(call)
        async with self.changed:
            self.changed.notify_all()
        return await self.reply(request, len(self.calls))

    async def wait_calls(self, n: int, within: float = 20) -> list[Call]:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: len(self.calls) >= n)
        return self.calls

    def events(self, event_type: str) -> list[Call]:
        return [c for c in self.calls if json.loads(c.body)["type"] == event_type]


@asynccontextmanager
async def receiver(reply: Reply, port: int | None = None) -> AsyncIterator[Receiver]:
    rec = Receiver(reply)
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app, host="127.0.0.1", port=port)
    async with server:
        rec.url = str(server.make_url("/hook"))
        yield rec


def status(code: int, **headers: str) -> Reply:
    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=code, headers=headers)

    return reply


def failing_first(n_failures: int, code: int = 500, **headers: str) -> Reply:
    async def reply(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=code if n <= n_failures else 200, headers=headers)

    return reply


class StateWatch:
    """Wakes a waiter whenever a handler writes a job's webhook state (no polling)."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stack = stack
        self.changed = asyncio.Condition()
        original = stack.ctx.storage.put_bytes

        async def put_bytes(key: str, data: bytes, *args: Any, **kwargs: Any) -> None:
            await original(key, data, *args, **kwargs)
            if key.endswith("/webhook.json"):
                async with self.changed:
                    self.changed.notify_all()

        monkeypatch.setattr(stack.ctx.storage, "put_bytes", put_bytes)

    async def wait(self, job_id: str, state: str, within: float = 20) -> WebhookState:
        async with asyncio.timeout(within), self.changed:
            while True:
                current = await self.stack.ctx.jobs.webhook_state(job_id)
                if current is not None and current.state == state:
                    return current
                await self.changed.wait()


def hook_settings(make_settings: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_retry_schedule": LADDER,
        "webhook_allowed_networks": "127.0.0.0/8",
        "webhook_timeout_s": 5.0,
    }
    values.update(overrides)
    settings: Settings = make_settings(**values)
    return settings


@asynccontextmanager
async def hook_stack(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> AsyncIterator[tuple[Stack, StateWatch]]:
    async with running_stack(hook_settings(make_settings, **overrides)) as stack:
        watch = StateWatch(stack, monkeypatch)
        stack.start_webhooks()
        yield stack, watch


async def submit(stack: Stack, url: str, data: bytes | None = None, **fields: str) -> str:
    pdf = data if data is not None else make_pdf(["webhook test"])
    resp = await stack.client.post("/v1/jobs", data=form(pdf, webhook_url=url, **fields))
    assert resp.status == 202, await resp.text()
    job_id: str = (await resp.json())["job_id"]
    return job_id


async def get_job(stack: Stack, job_id: str) -> Any:
    resp = await stack.client.get(f"/v1/jobs/{job_id}")
    assert resp.status == 200
    return await resp.json()


def verify(call: Call, secret: str = SECRET) -> Any:
    """The standardwebhooks reference verifier; returns the payload."""
    return Webhook(secret).verify(call.body, call.headers)


async def test_retries_until_delivered_with_one_id_and_valid_signatures(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = f"{SECRET} {OLD_SECRET}"  # rotation: both sign
    async with (
        receiver(failing_first(2)) as rec,
        hook_stack(make_settings, monkeypatch, webhook_secret=secrets) as (stack, watch),
    ):
        job_id = await submit(stack, rec.url, webhook_token=TOKEN)
        state = await watch.wait(job_id, "delivered")
        calls = await rec.wait_calls(3)

    assert len(calls) == 3
    assert {c.headers["webhook-id"] for c in calls} == {f"msg_{job_id}_job_completed"}
    assert len({c.body for c in calls}) == 1  # the same bytes, signed afresh each time
    for call in calls:
        assert len(call.headers["webhook-signature"].split()) == 2
        for secret in (SECRET, OLD_SECRET):
            payload = verify(call, secret)
            assert payload["type"] == "job.completed"
            assert payload["data"]["job_id"] == job_id
            assert payload["data"]["status"] == "completed"
        assert call.headers["Authorization"] == f"Bearer {TOKEN}"
        assert call.headers["X-Callback-Token"] == TOKEN
    # Each retry waited at least its (downward-jittered) step of the ladder.
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.09
    assert gaps[1] >= 0.18

    assert state.attempts == 3
    assert state.last_status == 200
    assert state.delivered_at is not None
    assert TOKEN not in caplog.text
    assert SECRET not in caplog.text


async def test_state_is_visible_while_retrying_and_in_the_job(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        receiver(failing_first(1, code=503)) as rec,
        hook_stack(make_settings, monkeypatch, webhook_retry_schedule="1s") as (stack, watch),
    ):
        job_id = await submit(stack, rec.url)
        await watch.wait(job_id, "retrying")
        job = await get_job(stack, job_id)
        hook = job["webhook"]
        assert hook["state"] == "retrying"
        assert hook["attempts"] == 1
        assert hook["last_status"] == 503
        assert hook["last_error"] == "HTTP 503"
        assert hook["next_attempt_at"] is not None
        assert "sealed" not in hook
        await watch.wait(job_id, "delivered")
        job = await get_job(stack, job_id)
        assert job["webhook"]["state"] == "delivered"
        assert job["webhook"]["attempts"] == 2
        assert job["webhook"]["delivered_at"] is not None


async def test_a_storage_outage_neither_holds_up_nor_repeats_a_delivery(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    """S3 goes away the moment the receiver has the webhook: the delivery is done (once); its
    state waits in the broker and is stored when S3 is back."""
    port = urlsplit(s3_endpoint).port
    assert port is not None
    async with fault_proxy(port) as proxy:

        async def cut_then_accept(request: web.Request, n: int) -> web.StreamResponse:
            await proxy.cut()
            return web.Response(status=204)

        async with (
            receiver(cut_then_accept) as rec,
            hook_stack(make_settings, monkeypatch, s3_endpoint=proxy.url) as (stack, watch),
        ):
            with watch_logs("shared.runtime.consumer") as logs:
                job_id = await submit(stack, rec.url)
                await rec.wait_calls(1)
                try:
                    # The state writer keeps failing while S3 is away ...
                    await logs.wait_for(lambda: logs.count("transient failure") >= 2)
                finally:
                    await proxy.restore()
            # ... and the delivery was neither held up nor made again meanwhile.
            assert len(rec.calls) == 1
            state = await watch.wait(job_id, "delivered")
            assert state.attempts == 1
            assert len(rec.calls) == 1


async def test_states_are_batched_and_stored_newest_last(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """States handed over at once travel in a few messages; each job ends with its last."""
    async with running_stack(hook_settings(make_settings)) as stack:
        watch = StateWatch(stack, monkeypatch)
        jobs = [uuid.uuid4().hex for _ in range(50)]
        updates = [
            WebhookStateUpdate(
                job_id=job_id,
                state=WebhookState(state=state, url="http://127.0.0.1/hook", attempts=n),
            )
            for n, state in enumerate(("pending", "retrying", "delivered"))
            for job_id in jobs
        ]
        log = StateLog(stack.ctx)
        await asyncio.gather(*(log.append(update) for update in updates))
        # Nobody writes them yet: the broker holds them, in a handful of messages.
        channel = await stack.ctx.connection.channel()
        queue = await channel.declare_queue(stack.ctx.topology.webhook_states, passive=True)
        batches = queue.declaration_result.message_count
        await channel.close()
        assert batches is not None
        assert 1 <= batches <= 5, batches
        stack.start_webhooks()
        for job_id in jobs:
            state = await watch.wait(job_id, "delivered")
            assert state.attempts == 2


async def test_receiver_down_for_the_whole_ladder_is_dead_lettered_then_replayed(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()  # nothing listens here yet: every attempt is refused
    url = f"http://127.0.0.1:{port}/hook"
    async with hook_stack(make_settings, monkeypatch) as (stack, watch):
        job_id = await submit(stack, url, webhook_token=TOKEN)
        dead = await watch.wait(job_id, "dead")
        assert dead.attempts == 4  # the first attempt and one per step of the ladder
        assert dead.last_error is not None
        assert "connection failed" in dead.last_error
        job = await get_job(stack, job_id)
        assert job["webhook"]["state"] == "dead"

        parked = await list_dead(stack.ctx.settings)
        assert [(p.job_id, p.event_type, p.url, p.attempts) for p in parked] == [
            (job_id, "job.completed", url, 4)
        ]
        assert parked[0].reason == "retry"
        assert TOKEN not in repr(parked)
        assert await list_dead(stack.ctx.settings) == parked  # listing leaves them parked

        async with receiver(status(204), port=port) as rec:
            assert await replay_dead(stack.ctx.settings, job_id="f" * 32) == 0
            assert await replay_dead(stack.ctx.settings, job_id=job_id) == 1
            state = await watch.wait(job_id, "delivered")
            (call,) = await rec.wait_calls(1)
        assert state.attempts == 1  # the count starts again after a replay
        assert call.headers["webhook-id"] == f"msg_{job_id}_job_completed"
        assert call.headers["X-Callback-Token"] == TOKEN
        verify(call)
        assert await list_dead(stack.ctx.settings) == []


async def test_gone_stops_at_once(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with (
        receiver(status(410)) as rec,
        hook_stack(make_settings, monkeypatch) as (stack, watch),
    ):
        job_id = await submit(stack, rec.url)
        dead = await watch.wait(job_id, "dead")
        assert dead.attempts == 1
        assert dead.last_status == 410
        assert len(rec.calls) == 1
        (parked,) = await list_dead(stack.ctx.settings)
        assert parked.reason == "gone"
        assert parked.last_status == 410


async def test_429_retry_after_is_honoured(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without Retry-After the second attempt would come after 100 ms.
    async with (
        receiver(failing_first(1, code=429, **{"Retry-After": "1"})) as rec,
        hook_stack(make_settings, monkeypatch, webhook_retry_schedule="100ms,1s,2s") as (
            stack,
            watch,
        ),
    ):
        job_id = await submit(stack, rec.url)
        retrying = await watch.wait(job_id, "retrying")
        assert retrying.last_status == 429
        state = await watch.wait(job_id, "delivered")
        first, second = await rec.wait_calls(2)
    assert second.at - first.at >= 0.95
    assert state.attempts == 2


async def test_redirects_are_not_followed(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        receiver(status(200)) as target,
        receiver(status(302, Location="PLACEHOLDER")) as redirector,
        hook_stack(make_settings, monkeypatch, webhook_retry_schedule="100ms") as (stack, watch),
    ):
        redirector.reply = status(307, Location=target.url)
        job_id = await submit(stack, redirector.url)
        dead = await watch.wait(job_id, "dead")
        assert dead.attempts == 2
        assert dead.last_status == 307
        assert dead.last_error is not None
        assert "redirect" in dead.last_error
        assert target.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://2130706433/hook",
        "ftp://example.com/hook",
        "not a url",
    ],
)
async def test_private_and_loopback_targets_are_refused_at_submit(
    make_settings: Any, url: str
) -> None:
    settings = make_settings(webhook_secret=SECRET)
    async with running_stack(settings, extract_running=False) as stack:
        resp = await stack.client.post("/v1/jobs", data=form(make_pdf(["x"]), webhook_url=url))
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["error"]["code"] == "WEBHOOK_URL_REFUSED"
        resp = await stack.client.post(
            "/v1/jobs",
            json={"source": {"s3": {"key": "missing.pdf"}}, "webhook": {"url": url}},
        )
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "WEBHOOK_URL_REFUSED"
        assert await stack.ctx.storage.list_keys("jobs/") == []
        assert await stack.ctx.storage.list_keys("index/") == []


async def test_loopback_is_accepted_when_allowed_and_private_refused_at_delivery(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hook_stack(make_settings, monkeypatch) as (stack, watch):
        resp = await stack.client.post(
            "/v1/jobs", data=form(make_pdf(["x"]), webhook_url="http://127.0.0.1:9/hook")
        )
        assert resp.status == 202
        # A delivery that reaches the dispatcher some other way is checked again there.
        job_id = "e" * 32
        delivery = WebhookDelivery(
            event_id=f"msg_{job_id}_job_completed",
            job_id=job_id,
            event_type="job.completed",
            url="http://10.1.2.3/hook",
            body="{}",
        )
        ctx = stack.ctx
        await publish(ctx.channel, ctx.topology.webhooks_exchange, ctx.topology.webhooks, delivery)
        dead = await watch.wait(job_id, "dead")
        assert dead.attempts == 1
        assert dead.last_error is not None
        assert "private address" in dead.last_error


async def test_a_hung_receiver_does_not_block_other_deliveries(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    async with (
        receiver(hang) as hung,
        receiver(status(200)) as fast,
        hook_stack(make_settings, monkeypatch, webhook_timeout_s=30.0) as (stack, watch),
    ):
        try:
            stuck = [await submit(stack, hung.url) for _ in range(3)]
            await hung.wait_calls(3)
            job_id = await submit(stack, fast.url)
            await watch.wait(job_id, "delivered", within=10)
            await fast.wait_calls(1)
            assert not release.is_set()
            for stuck_id in stuck:
                assert (await get_job(stack, stuck_id))["webhook"]["state"] == "pending"
        finally:
            release.set()
        for stuck_id in stuck:
            await watch.wait(stuck_id, "delivered")


async def test_a_failed_job_sends_its_failure_webhook(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        receiver(status(200)) as rec,
        hook_stack(make_settings, monkeypatch) as (stack, watch),
    ):
        job_id = await submit(stack, rec.url, data=b"%PDF-1.4\n" + os.urandom(4000))
        await watch.wait(job_id, "delivered")
        (call,) = await rec.wait_calls(1)
    payload = verify(call)
    assert payload["type"] == "job.failed"
    assert call.headers["webhook-id"] == f"msg_{job_id}_job_failed"
    assert payload["data"]["status"] == "failed"
    assert payload["data"]["error"]["code"] in ("PDF_DAMAGED", "NOT_A_PDF")
    assert payload["data"]["error"]["message"]


async def test_redeliver_resends_the_same_event_and_no_secret_is_stored(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        receiver(status(200)) as rec,
        hook_stack(make_settings, monkeypatch) as (stack, watch),
    ):
        resp = await stack.client.post(f"/v1/jobs/{'d' * 32}/webhook/redeliver")
        assert resp.status == 404
        job_id = await submit(stack, rec.url, webhook_token=TOKEN)
        await watch.wait(job_id, "delivered")
        await rec.wait_calls(1)

        resp = await stack.client.post(f"/v1/jobs/{job_id}/webhook/redeliver")
        assert resp.status == 202, await resp.text()
        assert TOKEN not in await resp.text()
        first, again = await rec.wait_calls(2)
        await watch.wait(job_id, "delivered")
        assert len(rec.calls) == 2

        job_text = await (await stack.client.get(f"/v1/jobs/{job_id}")).text()
        stored = [
            await stack.ctx.storage.get_bytes(key) for key in await stack.ctx.storage.list_keys("")
        ]

    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert again.body == first.body
    assert again.headers["webhook-timestamp"] >= first.headers["webhook-timestamp"]
    assert again.headers["X-Callback-Token"] == TOKEN
    verify(again)

    secret_key = SECRET.removeprefix("whsec_")
    assert len(stored) >= 4
    for blob in stored:
        for needle in (TOKEN, SECRET, secret_key):
            assert needle.encode() not in blob
    for text in (job_text, caplog.text):
        for needle in (TOKEN, SECRET, secret_key):
            assert needle not in text


async def test_progress_webhooks_only_when_asked(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two documents: the same one twice would be answered from the cache when the first job
    # ends before the second one starts (a loaded machine), and then nothing reports progress.
    pdf = make_pdf([f"page {i}" for i in range(6)])
    other = make_pdf([f"other page {i}" for i in range(6)])
    async with (
        receiver(status(200)) as rec,
        hook_stack(make_settings, monkeypatch) as (stack, watch),
    ):
        plain = await submit(stack, rec.url, data=pdf)
        with_progress = await submit(stack, rec.url, data=other, webhook_progress="true")
        await watch.wait(plain, "delivered")
        await watch.wait(with_progress, "delivered")
        await rec.wait_calls(3)

    by_job: dict[str, list[str]] = {}
    for call in rec.calls:
        payload = verify(call)
        by_job.setdefault(payload["data"]["job_id"], []).append(payload["type"])
    assert by_job[plain] == ["job.completed"]
    kinds = by_job[with_progress]
    assert kinds.count("job.completed") == 1
    progress = rec.events("job.progress")
    assert len(progress) == kinds.count("job.progress") >= 1
    assert progress[0].headers["webhook-id"].startswith(f"msg_{with_progress}_job_progress_")
    # Throttled to one a second (a six-page document usually sends just one).
    for a, b in itertools.pairwise(progress):
        assert b.at - a.at >= 0.8


def test_run_webhooks_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")}
    env["PDFRELAY_S3_ENDPOINT"] = "http://127.0.0.1:9"
    pdfrelay = str(Path(sys.executable).with_name("pdfrelay"))
    for secret in (None, "whsec_not*base64"):
        run_env = env if secret is None else {**env, "PDFRELAY_WEBHOOK_SECRET": secret}
        out = subprocess.run(
            [pdfrelay, "run", "webhooks"],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2
        assert "PDFRELAY_WEBHOOK_SECRET" in out.stderr
        if secret is not None:
            assert secret not in out.stderr
